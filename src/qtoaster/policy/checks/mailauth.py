"""Inbound mail authentication at the final dot: the ``spf``, ``fcrdns`` and ``dmarc``
checks (issue 14; docs/antispam.md "Mail authentication").

One :class:`MailAuth` per configuration evaluates a message once (SPF on MAIL FROM and
HELO, every DKIM signature, ARC, DMARC, iprev: ``mailauth/verifier.py``, in its own
threads); the three checks share that evaluation through ``SessionState.mailauth`` and
each refuses for its own reason, so the pipeline's log line names the one that did
(``check=spf``, ``check=fcrdns``, ``check=dmarc``).  ``dmarc`` comes last and adds the
Authentication-Results line, the quarantine mark, and asks for forged
Authentication-Results lines (our authserv-id) and forged marks to be removed; it does
that removal for mail it does not judge too (relay clients, submission, MAILAUTH=0), so
no sender can bring in a verdict of ours or the mark that files mail into .Junk.

Who is judged: mail on the ``smtp`` listener (port 25) only, never a RELAYCLIENT or an
authenticated session; ``[mailauth] enabled`` per recipient domain, MAILAUTH in tcp.smtp
per client (``"0"``/empty: off).  A message for several domains gets the mildest action
any of them asks for (record < tag < junk < reject), so no domain's mail is refused or
junked against its own setting.

Invariant: a DNS failure that the applied policy depends on is a 451, never a pass and
never a 5xx; a failure it does not depend on is only recorded (``temperror``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping

from qtoaster.config.mailsettings import (
    DmarcQuarantine,
    DmarcReject,
    Fcrdns,
    MailAuthPolicy,
    MailAuthSettings,
    SpfFail,
)
from qtoaster.core.envelope import split_address
from qtoaster.core.reply import Reply
from qtoaster.mailauth.results import MARK
from qtoaster.mailauth.verifier import Evaluation, Verifier
from qtoaster.policy.verdict import PASS, Facts, SessionState, Stage, Verdict

SPF_FAIL = "sorry, SPF check of the sender failed (#5.7.23)"
SPF_TEMP = "temporary DNS failure checking SPF; try again later (#4.7.24)"
DMARC_REJECT = "sorry, message refused by its From domain's DMARC policy (#5.7.1)"
DMARC_TEMP = "temporary DNS failure checking DMARC; try again later (#4.7.5)"
NO_FCRDNS = "sorry, no forward-confirmed reverse DNS for your address (#4.7.25)"
FCRDNS_TEMP = "temporary DNS failure checking your reverse DNS (#4.7.25)"

# Mildest first: a message for several domains gets the mildest of their actions.
_QUARANTINE_ORDER = (DmarcQuarantine.RECORD, DmarcQuarantine.TAG, DmarcQuarantine.JUNK)
_REJECT_ORDER = (DmarcReject.RECORD, DmarcReject.QUARANTINE, DmarcReject.REJECT)


def judged(facts: Facts, env: Mapping[str, str]) -> bool:
    """Mail that mailauth judges at all: port 25, not a relay or authenticated client."""
    if facts.listener != "smtp" or "RELAYCLIENT" in env or facts.authenticated:
        return False
    value = env.get("MAILAUTH")
    return value is None or value not in ("", "0")


class MailAuth:
    """The evaluation the three checks share, and the policies of the recipient domains."""

    def __init__(self, settings: MailAuthSettings, verifier: Verifier) -> None:
        self.settings = settings
        self.verifier = verifier

    def policies(self, facts: Facts) -> list[MailAuthPolicy]:
        """The enabled policies of the message's recipient domains (empty: not judged)."""
        if not judged(facts, facts.env):
            return []
        forced = facts.env.get("MAILAUTH") not in (None, "", "0")  # tcp.smtp switched it on
        chosen = [self.settings.for_domain(split_address(r)[1]) for r in facts.recipients]
        if forced:
            return chosen or [self.settings.policy]
        return [p for p in chosen if p.enabled] if all(p.enabled for p in chosen) else []

    async def evaluation(self, facts: Facts, state: SessionState) -> Evaluation:
        message = facts.message
        assert message is not None
        memo = state.mailauth
        if memo is not None and memo[0] == message.path:
            return memo[1]
        result = await self.verifier.evaluate(
            facts.remote_ip, facts.helo or "", facts.sender or "", message.path, message.body_offset
        )
        state.mailauth = (message.path, result)
        return result


class _SharedCheck:
    """What the three checks have in common: DATA, and the one evaluation they share."""

    stages = frozenset({Stage.DATA})

    def __init__(self, shared: MailAuth) -> None:
        self._shared = shared


class Spf(_SharedCheck):
    name = "spf"

    def check(
        self, stage: Stage, facts: Facts, state: SessionState
    ) -> Verdict | Awaitable[Verdict]:
        policies = self._shared.policies(facts)
        if not policies:
            return PASS
        return self._judge(facts, state, all(p.spf_fail is SpfFail.REJECT for p in policies))

    async def _judge(self, facts: Facts, state: SessionState, refuse: bool) -> Verdict:
        evaluation = await self._shared.evaluation(facts, state)
        spf = evaluation.spf
        if refuse and spf.result == "fail":
            return Verdict(reply=Reply(550, SPF_FAIL), why=f"spf=fail {spf.identity}")
        if refuse and spf.result == "temperror":
            return Verdict(reply=Reply(451, SPF_TEMP), why=f"spf=temperror {spf.explanation}")
        return PASS


class FcrdnsCheck(_SharedCheck):
    name = "fcrdns"

    def check(
        self, stage: Stage, facts: Facts, state: SessionState
    ) -> Verdict | Awaitable[Verdict]:
        policies = self._shared.policies(facts)
        if not policies or not all(p.fcrdns is Fcrdns.REQUIRE for p in policies):
            return PASS
        return self._judge(facts, state)

    async def _judge(self, facts: Facts, state: SessionState) -> Verdict:
        evaluation = await self._shared.evaluation(facts, state)
        if evaluation.iprev == "temperror":
            return Verdict(reply=Reply(451, FCRDNS_TEMP), why="iprev=temperror")
        if evaluation.iprev != "pass":
            return Verdict(reply=Reply(450, NO_FCRDNS), why=f"iprev={evaluation.iprev}")
        return PASS


class Dmarc(_SharedCheck):
    name = "dmarc"

    def check(
        self, stage: Stage, facts: Facts, state: SessionState
    ) -> Verdict | Awaitable[Verdict]:
        policies = self._shared.policies(facts)
        if not policies:
            # Not judged, but nobody may bring our verdicts or our quarantine mark in.
            return self._strip(facts)
        return self._judge(facts, state, policies)

    async def _strip(self, facts: Facts) -> Verdict:
        message = facts.message
        assert message is not None
        drop = await self._shared.verifier.forged(message.path, message.body_offset)
        return Verdict(drop=drop) if drop else PASS

    async def _judge(
        self, facts: Facts, state: SessionState, policies: list[MailAuthPolicy]
    ) -> Verdict:
        evaluation = await self._shared.evaluation(facts, state)
        dmarc = evaluation.dmarc
        on_reject = min((p.dmarc_reject for p in policies), key=_REJECT_ORDER.index)
        on_quarantine = min((p.dmarc_quarantine for p in policies), key=_QUARANTINE_ORDER.index)
        mark = b""
        acting = on_reject is not DmarcReject.RECORD or on_quarantine is not DmarcQuarantine.RECORD
        if dmarc.result == "temperror" and dmarc.policy != "none" and acting:
            # The record could not be read ("unknown"), or it asks for quarantine or
            # reject and an identifier that might have aligned could not be checked.
            why = f"dmarc=temperror {dmarc.from_domain}: {dmarc.reason}"
            return Verdict(reply=Reply(451, DMARC_TEMP), why=why)
        if dmarc.result == "fail" and evaluation.dmarc_actionable:
            action = dmarc.disposition
            if action == "reject" and on_reject is DmarcReject.REJECT:
                why = f"dmarc=fail header.from={dmarc.from_domain} p={dmarc.policy}"
                return Verdict(reply=Reply(550, DMARC_REJECT), why=why)
            if action == "reject" and on_reject is DmarcReject.QUARANTINE:
                action = "quarantine"
            if action == "quarantine" and on_quarantine is not DmarcQuarantine.RECORD:
                mark = MARK + b": " + on_quarantine.value.encode() + b"\n"
        return Verdict(headers=evaluation.header + mark, drop=evaluation.drop)
