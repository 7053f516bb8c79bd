"""Runs the checks of a stage in order and turns the first rejection into a reply.

One log line per rejection, naming stage, check, client, HELO, sender, recipient
and the reply sent (DESIGN.md sections 5 and 9).  A rewrite returned by a check is
applied to the facts seen by the checks after it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Protocol

from qtoaster.policy.verdict import Facts, Stage, Verdict

log = logging.getLogger("qtoaster.policy")


class Check(Protocol):
    name: str
    stages: frozenset[Stage]

    def check(self, stage: Stage, facts: Facts) -> Verdict: ...


class Pipeline:
    def __init__(self, checks: Sequence[Check]) -> None:
        self._by_stage: dict[Stage, list[Check]] = {stage: [] for stage in Stage}
        for check in checks:
            for stage in check.stages:
                self._by_stage[stage].append(check)

    def run(self, stage: Stage, facts: Facts, conn_id: str = "-") -> Verdict:
        rewritten: str | None = None
        for check in self._by_stage[stage]:
            verdict = check.check(stage, facts)
            if verdict.reply is not None:
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
            if verdict.rewritten is not None:
                rewritten = verdict.rewritten
                facts = dataclasses.replace(facts, recipient=rewritten)
        return Verdict(rewritten=rewritten)
