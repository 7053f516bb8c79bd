"""dnsbl: postscreen's weighted DNSBL/DNSWL score (postscreen_dnsbl_sites, _threshold,
_whitelist_threshold; issue 18; docs/antispam.md "DNSBL scoring"), beside rblsmtpd's
one-list dialog (policy/checks/rblsmtpd.py, unchanged).

At CONNECT the client's score is looked up (policy/dnsbl.py: every site at once, one
deadline, cached per address by the worker) and kept in the session's state; the greeting
waits for it.  A score at or above ``threshold`` refuses every RCPT of the session with
``550 5.7.1 Service unavailable; client [ip] blocked using <zones>`` (postscreen's text;
its ``enforce`` action: the log line names HELO, sender and recipient).  A score at or
below a negative ``allow_threshold`` (DNSWL sites have negative weights) marks the client
allowed: the pregreet, pipelining and greylist checks let it through.

Who is scored: clients of the ``smtp`` listener, never RELAYCLIENT clients.  Switch: a
non-empty ``[dnsbl] sites``; DNSBL in tcp.smtp per client (``"0"`` or empty: off, any
other value: on).

Invariant: a lookup that fails blocks nobody (policy/dnsbl.py counts it 0; a bug is
logged and the client let through).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable

from qtoaster.core.reply import Reply
from qtoaster.policy.dnsbl import Dnsbl, Score
from qtoaster.policy.verdict import PASS, Facts, SessionState, Stage, Verdict

log = logging.getLogger("qtoaster.policy.dnsbl")


def blocked(remote_ip: str, zones: str) -> Reply:
    return Reply(550, f"Service unavailable; client [{remote_ip}] blocked using {zones} (#5.7.1)")


class DnsblCheck:
    name = "dnsbl"
    stages = frozenset({Stage.CONNECT, Stage.RCPT})

    def __init__(self, dnsbl: Dnsbl | None) -> None:
        self._dnsbl = dnsbl  # None: no sites configured

    def check(
        self, stage: Stage, facts: Facts, state: SessionState
    ) -> Verdict | Awaitable[Verdict]:
        memo = state.dnsbl
        if stage is Stage.RCPT:
            return (
                PASS
                if memo.blocked is None
                else Verdict(reply=memo.blocked, why=f"score={memo.score}")
            )
        dnsbl = self._dnsbl
        if dnsbl is None or not _switched_on(facts):
            return PASS
        if facts.listener != "smtp" or "RELAYCLIENT" in facts.env:
            return PASS
        score = dnsbl.cached(facts.remote_ip)
        if score is not None:
            return self._keep(dnsbl, score, facts, state)
        return self._lookup(dnsbl, facts, state)

    async def _lookup(self, dnsbl: Dnsbl, facts: Facts, state: SessionState) -> Verdict:
        try:
            score = await dnsbl.score(facts.remote_ip)
        except Exception:  # a bug in the lookup must block nobody
            log.exception("dnsbl lookup failed for %s", facts.remote_ip)
            return PASS
        return self._keep(dnsbl, score, facts, state)

    @staticmethod
    def _keep(dnsbl: Dnsbl, score: Score, facts: Facts, state: SessionState) -> Verdict:
        settings = dnsbl.settings
        state.dnsbl.score = score.total
        if score.total >= settings.threshold:
            state.dnsbl.blocked = blocked(facts.remote_ip, score.blocked_by())
        elif settings.allow_threshold < 0 and score.total <= settings.allow_threshold:
            state.dnsbl.allowed = True
        return PASS


def _switched_on(facts: Facts) -> bool:
    value = facts.env.get("DNSBL")
    return value is None or value not in ("", "0")
