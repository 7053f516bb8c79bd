"""greylist at RCPT: the first try of a (client network, sender, recipient) triplet is
answered ``451 4.7.1``; a retry after ``[greylist] delay`` and within ``retry_window``
passes, and so does all later mail of the triplet (issue 18; docs/antispam.md
"Greylisting"; the rules are ``policy/greylist.py``'s, the shared rows
``policy/state.py``'s).

Who is never greylisted: clients on another listener than ``smtp`` (port 25), RELAYCLIENT
clients, authenticated sessions, clients a DNSWL allows (``[dnsbl] allow_threshold``),
what control/greylistpass lists (client, sender or recipient), clients auto-whitelisted
after ``auto_whitelist`` passed retries, and mail whose MAIL FROM passes SPF for the
client, when ``[mailauth] enabled`` (asked only when the triplet would be greylisted, so
it costs nothing on the common path; the triplet is then recorded as passed; a lookup
takes at most ``[mailauth] timeout``). DKIM is known only after DATA, too late for a RCPT
answer: a DKIM-signing sender is greylisted once and then auto-whitelisted like any other
that retries.

Switch: ``[greylist] enabled``; GREYLIST in tcp.smtp per client (``"0"`` or empty: off,
any other value: on).

Cost: a client known to be whitelisted is answered from the session's memory (or the
worker's, for :data:`WHITELIST_CACHE_SECONDS`) without a query; others cost one short
transaction in the state's threads.  A state that cannot be read lets the client through
(greylisting is a heuristic; the failure is logged), it never refuses mail.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor

from qtoaster.config.limitsettings import GreylistSettings
from qtoaster.core.clock import Clock, SystemClock
from qtoaster.core.errors import TemporaryFailure
from qtoaster.core.reply import Reply
from qtoaster.policy.greylist import PassList, client_network
from qtoaster.policy.state import PolicyState
from qtoaster.policy.verdict import PASS, Facts, SessionState, Stage, Verdict

log = logging.getLogger("qtoaster.policy.greylist")

WHITELIST_CACHE_SECONDS = 60.0
WHITELIST_CACHE_MAX = 10_000

# The SPF check of a sender (ip, sender, helo) -> result ("pass", "fail", ...).
SpfAsk = Callable[[str, str, str], Awaitable[str]]


def greylisted(retry_in: float) -> Reply:
    seconds = max(1, math.ceil(retry_in))
    return Reply(451, f"greylisted, please try again in {seconds} seconds (#4.7.1)")


def switched_on(facts: Facts, enabled: bool) -> bool:
    """GREYLIST from tcp.smtp decides for its client, else the setting."""
    value = facts.env.get("GREYLIST")
    return enabled if value is None else value not in ("", "0")


class Greylist:
    name = "greylist"
    stages = frozenset({Stage.RCPT})

    def __init__(
        self,
        settings: GreylistSettings,
        state: PolicyState,
        executor: Executor,
        passlist: PassList | None = None,
        spf: SpfAsk | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._settings = settings
        self._state = state
        self._executor = executor
        self._passlist = passlist or PassList()
        self._spf = spf
        self._clock = clock or SystemClock()
        self._whitelisted: dict[str, float] = {}  # network -> until (monotonic)

    def check(
        self, stage: Stage, facts: Facts, state: SessionState
    ) -> Verdict | Awaitable[Verdict]:
        memo = state.greylist
        if (
            memo.whitelisted
            or state.dnsbl.allowed
            or not switched_on(facts, self._settings.enabled)
        ):
            return PASS
        if facts.listener != "smtp" or "RELAYCLIENT" in facts.env or facts.authenticated:
            return PASS
        sender, recipient = facts.sender or "", facts.recipient or ""
        if self._passlist.passes(facts.remote_ip, sender, recipient):
            return PASS
        net = client_network(facts.remote_ip, self._settings)
        until = self._whitelisted.get(net)
        if until is not None and until > time.monotonic():
            memo.whitelisted = True
            return PASS
        return self._ask(facts, state, net, sender.lower(), recipient.lower())

    async def _ask(
        self, facts: Facts, state: SessionState, net: str, sender: str, recipient: str
    ) -> Verdict:
        loop = asyncio.get_running_loop()
        now = self._clock.time()
        try:
            decision = await loop.run_in_executor(
                self._executor, self._state.greylist, net, sender, recipient, now, self._settings
            )
        except TemporaryFailure as exc:
            log.warning("greylist %s; %s let through", exc, facts.remote_ip)
            return PASS
        if decision.whitelisted:
            state.greylist.whitelisted = True
            if len(self._whitelisted) >= WHITELIST_CACHE_MAX:
                self._whitelisted.clear()
            self._whitelisted[net] = time.monotonic() + WHITELIST_CACHE_SECONDS
        if decision.passes:
            return PASS
        if sender and await self._spf_passes(facts, state, sender):
            try:
                await loop.run_in_executor(
                    self._executor, self._state.pass_triplet, net, sender, recipient, now
                )
            except TemporaryFailure as exc:
                log.warning("greylist %s", exc)
            return PASS
        return Verdict(reply=greylisted(decision.retry_in), why=f"greylisted net={net}")

    async def _spf_passes(self, facts: Facts, state: SessionState, sender: str) -> bool:
        if self._spf is None:
            return False
        memo = state.greylist
        if memo.spf is not None and memo.spf[0] == sender:
            return memo.spf[1] == "pass"
        try:
            result = await self._spf(facts.remote_ip, sender, facts.helo or "")
        except Exception:  # an SPF problem only means: greylist as usual
            log.exception("greylist SPF check of %s failed", sender)
            result = "temperror"
        memo.spf = (sender, result)
        return result == "pass"
