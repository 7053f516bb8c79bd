"""Runs the checks of a stage in order and turns the first rejection into a reply.

One log line per rejection, naming stage, check, client, HELO, sender, recipient
and the reply sent (DESIGN.md sections 5 and 9).  A rewrite returned by a check is
applied to the facts seen by the checks after it.

A check answers at once (a :class:`Verdict`) or, when it must wait for I/O (a directory
lookup off the event loop, a DNS query), with an awaitable of one.  :meth:`Pipeline.run`
stays synchronous while every check answers at once, so the common path costs no task;
from the first awaitable on it returns a coroutine the session awaits.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import Awaitable, Sequence
from typing import Protocol

from qtoaster.policy.verdict import PASS, Facts, Stage, Verdict

log = logging.getLogger("qtoaster.policy")


class Check(Protocol):
    name: str
    stages: frozenset[Stage]

    def check(self, stage: Stage, facts: Facts) -> Verdict | Awaitable[Verdict]: ...


class Pipeline:
    def __init__(self, checks: Sequence[Check]) -> None:
        self._by_stage: dict[Stage, list[Check]] = {stage: [] for stage in Stage}
        for check in checks:
            for stage in check.stages:
                self._by_stage[stage].append(check)

    def run(self, stage: Stage, facts: Facts, conn_id: str = "-") -> Verdict | Awaitable[Verdict]:
        checks = self._by_stage[stage]
        rewritten: str | None = None
        delay = 0.0
        for index, check in enumerate(checks):
            answer = check.check(stage, facts)
            if inspect.isawaitable(answer):
                return self._finish(stage, facts, conn_id, checks, index, answer, rewritten, delay)
            verdict = answer
            if verdict.reply is not None:
                return _rejected(stage, facts, conn_id, check, verdict)
            delay = max(delay, verdict.delay)  # a passing check may still make us wait (tarpit)
            if verdict.rewritten is not None:
                rewritten = verdict.rewritten
                facts = dataclasses.replace(facts, recipient=rewritten)
        return (
            PASS if rewritten is None and not delay else Verdict(rewritten=rewritten, delay=delay)
        )

    async def _finish(
        self,
        stage: Stage,
        facts: Facts,
        conn_id: str,
        checks: list[Check],
        index: int,
        pending: Awaitable[Verdict],
        rewritten: str | None,
        delay: float,
    ) -> Verdict:
        """The rest of :meth:`run` once a check answered with an awaitable."""
        for position in range(index, len(checks)):
            check = checks[position]
            answer = pending if position == index else check.check(stage, facts)
            verdict = await answer if inspect.isawaitable(answer) else answer
            if verdict.reply is not None:
                return _rejected(stage, facts, conn_id, check, verdict)
            delay = max(delay, verdict.delay)
            if verdict.rewritten is not None:
                rewritten = verdict.rewritten
                facts = dataclasses.replace(facts, recipient=rewritten)
        return Verdict(rewritten=rewritten, delay=delay)


def _rejected(stage: Stage, facts: Facts, conn_id: str, check: Check, verdict: Verdict) -> Verdict:
    assert verdict.reply is not None
    log.info(
        "%s reject stage=%s check=%s client=%s helo=%s from=<%s> to=<%s> reply=%r",
        conn_id,
        stage.value,
        check.name,
        facts.remote_ip,
        facts.helo,
        facts.sender,
        facts.recipient,
        verdict.reply.render().decode(errors="replace"),
    )
    return verdict
