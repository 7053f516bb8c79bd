"""rblsmtpd at CONNECT: is this client blocked before it is greeted? (spec 1, rblsmtpd(1))

The decision is ``policy/rbl.py``'s: RBLSMTPD from tcp.smtp decides alone when set
(empty: never blocked), else the ``[rblsmtpd]`` zones are asked (an awaitable: DNS never
runs on the event loop).  A rejection's reply is rblsmtpd's refusal (451, or 553); the
session answers it with rblsmtpd's dialog instead of its greeting (``smtpd/rblgate.py``).

Only the ``smtp`` listener is screened: submission and SMTPS clients authenticate, and
the toaster never put rblsmtpd in front of them.

Invariant: a lookup that fails (a bug, a resolver problem ``Rbl`` did not foresee)
blocks nobody: the client is let through and the failure logged.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable

from qtoaster.policy.rbl import Block, Rbl, env_decision
from qtoaster.policy.verdict import PASS, Facts, SessionState, Stage, Verdict

log = logging.getLogger("qtoaster.policy.rbl")


class Rblsmtpd:
    name = "rblsmtpd"
    stages = frozenset({Stage.CONNECT})

    def __init__(self, rbl: Rbl | None) -> None:
        self._rbl = rbl  # None: no zones configured, RBLSMTPD alone decides

    def check(
        self, stage: Stage, facts: Facts, state: SessionState
    ) -> Verdict | Awaitable[Verdict]:
        if facts.listener != "smtp":
            return PASS
        decided, block = env_decision(facts.env)
        if decided or self._rbl is None:
            return _verdict(block)
        return self._lookup(self._rbl, facts)

    @staticmethod
    async def _lookup(rbl: Rbl, facts: Facts) -> Verdict:
        try:
            block = await rbl.decide(facts.remote_ip, facts.env)
        except Exception:  # a bug in the lookup must not block anyone, nor drop the session
            log.exception("rblsmtpd rblsmtpd lookup failed for %s", facts.remote_ip)
            block = None
        return _verdict(block)


def _verdict(block: Block | None) -> Verdict:
    return PASS if block is None else Verdict(reply=block.reply, why=f"listed by {block.source}")
