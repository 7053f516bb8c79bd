"""Runs the checks of a stage in order and turns the first rejection into a reply.

One pipeline serves every stage (CONNECT, HELO, MAIL, RCPT, DATA; docs/policy.md lists
the checks of each, in order).  One log line per rejection, written here and nowhere
else, naming stage, check, client, HELO, sender, recipient and the reply sent (DESIGN.md
sections 5 and 9); at DATA ``to=`` lists every recipient, and a verdict's ``why`` is
added in parentheses.  What a passing check returns is combined for the session: a
rewritten address is applied to the facts seen by the checks after it, the longest
delay wins, header lines are collected in check order, ranges to drop are merged.

A check answers at once (a :class:`Verdict`) or, when it must wait for I/O (a directory
lookup off the event loop, a DNS query, a scanner), with an awaitable of one.
:meth:`Pipeline.run` stays synchronous while every check answers at once, so the common
path costs no task; from the first awaitable on it returns a coroutine the session awaits.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import Awaitable, Sequence
from typing import Protocol

from qtoaster.core.logfields import fields, reply_text
from qtoaster.metrics import definitions as metrics
from qtoaster.policy.verdict import PASS, Facts, SessionState, Stage, Verdict

log = logging.getLogger("qtoaster.policy")


class Check(Protocol):
    name: str
    stages: frozenset[Stage]

    def check(
        self, stage: Stage, facts: Facts, state: SessionState
    ) -> Verdict | Awaitable[Verdict]: ...


class Pipeline:
    def __init__(self, checks: Sequence[Check]) -> None:
        self._by_stage: dict[Stage, list[Check]] = {stage: [] for stage in Stage}
        for check in checks:
            for stage in check.stages:
                self._by_stage[stage].append(check)

    def names(self, stage: Stage) -> list[str]:
        """The checks of ``stage`` in the order they run (docs, ``config check``, tests)."""
        return [check.name for check in self._by_stage[stage]]

    def run(
        self,
        stage: Stage,
        facts: Facts,
        conn_id: str = "-",
        state: SessionState | None = None,
    ) -> Verdict | Awaitable[Verdict]:
        """The stage's verdict; ``state`` is the session's (a run without one, as in a
        test of a single command, counts nothing across commands)."""
        checks = self._by_stage[stage]
        if not checks:
            return PASS
        if state is None:
            state = SessionState()
        passed = PASS
        for index, check in enumerate(checks):
            answer = check.check(stage, facts, state)
            if inspect.isawaitable(answer):
                return self._finish(stage, facts, state, conn_id, checks, index, answer, passed)
            if answer.reply is not None:
                return _rejected(stage, facts, conn_id, check, answer)
            if answer is not PASS:
                passed = _combine(passed, answer)
                if answer.rewritten is not None:
                    facts = dataclasses.replace(facts, recipient=answer.rewritten)
        return passed

    async def _finish(
        self,
        stage: Stage,
        facts: Facts,
        state: SessionState,
        conn_id: str,
        checks: list[Check],
        index: int,
        pending: Awaitable[Verdict],
        passed: Verdict,
    ) -> Verdict:
        """The rest of :meth:`run` once a check answered with an awaitable."""
        for position in range(index, len(checks)):
            check = checks[position]
            answer = pending if position == index else check.check(stage, facts, state)
            verdict = await answer if inspect.isawaitable(answer) else answer
            if verdict.reply is not None:
                return _rejected(stage, facts, conn_id, check, verdict)
            if verdict is not PASS:
                passed = _combine(passed, verdict)
                if verdict.rewritten is not None:
                    facts = dataclasses.replace(facts, recipient=verdict.rewritten)
        return passed


def _combine(passed: Verdict, more: Verdict) -> Verdict:
    """What the session applies after the checks that passed so far and ``more``."""
    return Verdict(
        rewritten=passed.rewritten if more.rewritten is None else more.rewritten,
        delay=max(passed.delay, more.delay),  # a passing check may still make us wait
        headers=passed.headers + more.headers,
        drop=tuple(sorted(set(passed.drop + more.drop))),
    )


def _rejected(stage: Stage, facts: Facts, conn_id: str, check: Check, verdict: Verdict) -> Verdict:
    assert verdict.reply is not None
    # At DATA the refusal is about the whole envelope, so every recipient is named.
    to = ",".join(facts.recipients) if stage is Stage.DATA else facts.recipient
    metrics.rejected(stage.value, check.name)
    log.info(
        "refused %s",
        fields(
            session=conn_id,
            stage=stage.value,
            reason=check.name,
            code=verdict.reply.code,
            reply=reply_text(verdict.reply.code, verdict.reply.text),
            client=facts.remote_ip,
            helo=facts.helo,
            sender=facts.sender,
            to=to,
            why=verdict.why or None,
        ),
    )
    return verdict
