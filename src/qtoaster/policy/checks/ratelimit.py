"""ratelimit: connections, messages and recipients per client and per authenticated user
(issue 18; docs/antispam.md "Rate limits"), counted in buckets every smtpd worker (and,
with PostgreSQL, every host) shares (``policy/state.py``).

What is limited, where, and the answer (each limit N per period is a bucket of N that
refills at N per period; 0 turns one limit off):

=========================  =======  =====================  ==========================
limit                      stage    counted per            answer when exceeded
=========================  =======  =====================  ==========================
connections_per_minute     CONNECT  client address (/64)   421 4.7.0, then hang up
messages_per_minute        MAIL     client address (/64)   451 4.7.1
recipients_per_message     RCPT     transaction            452 4.5.3
recipients_per_hour        RCPT     client address (/64)   451 4.7.1
auth_messages_per_hour     MAIL     authenticated user     451 4.7.1
auth_recipients_per_day    RCPT     user, distinct rcpts   451 4.7.1
=========================  =======  =====================  ==========================

An authenticated session is held to its user's limits instead of its address's (an office
behind one NAT address must not share one bucket); connections are counted before AUTH,
so per address.  RELAYCLIENT clients are exempt from the per-address limits (as Postfix
exempts mynetworks) unless tcp.smtp sets RATELIMIT for them.

Switch: ``[ratelimit] enabled``; tcp.smtp per client: RATELIMIT (``"0"``/empty: off,
any other value: on, RELAYCLIENT clients included), and one variable per limit
(:data:`VARIABLES`: a number replaces the setting, 0 turns it off).

Cost: a limit of 20 or more is counted in batches this worker reserves from the shared
bucket (``policy/reservations.py``): most events are answered from memory, at once, with
no transaction and no thread hop; a limit under 20 asks the state for every event (exact).

Invariants: a refused event is not counted (a client that keeps trying while refused
gets its next event when the bucket refills, not later); a state that cannot be read
lets the event through and logs the failure, it never refuses mail.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass

from qtoaster.config.limitsettings import RateLimitSettings
from qtoaster.core.clock import Clock, SystemClock
from qtoaster.core.errors import TemporaryFailure
from qtoaster.core.reply import Reply
from qtoaster.policy.reservations import Reservations, batch_size
from qtoaster.policy.state import PolicyState
from qtoaster.policy.verdict import PASS, Facts, SessionState, Stage, Verdict

log = logging.getLogger("qtoaster.policy.ratelimit")

MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0

# tcp.smtp variable -> the [ratelimit] key it overrides for its client.
VARIABLES = {
    "RATELIMIT_CONNECTIONS": "connections_per_minute",
    "RATELIMIT_MESSAGES": "messages_per_minute",
    "RATELIMIT_RCPTS": "recipients_per_message",
    "RATELIMIT_RCPTS_HOUR": "recipients_per_hour",
    "RATELIMIT_AUTH_MESSAGES": "auth_messages_per_hour",
    "RATELIMIT_AUTH_RCPTS": "auth_recipients_per_day",
}
_ATOI = re.compile(r"\s*\+?([0-9]+)")


def too_many_connections(me: str) -> Reply:
    return Reply(421, f"{me} too many connections from your address per minute (#4.7.0)")


TOO_MANY_MESSAGES = Reply(451, "too many messages from your address, try later (#4.7.1)")
TOO_MANY_RCPTS_HOUR = Reply(451, "too many recipients from your address, try later (#4.7.1)")
TOO_MANY_RCPTS = Reply(452, "too many recipients in this message (#4.5.3)")
USER_MESSAGES = Reply(451, "too many messages sent by your account, try later (#4.7.1)")
USER_RCPTS = Reply(451, "too many recipients today for your account, try later (#4.7.1)")


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits that apply to one client (settings with its tcp.smtp overrides)."""

    client: bool  # the per-address limits apply (not for RELAYCLIENT unless RATELIMIT set)
    connections_per_minute: int
    messages_per_minute: int
    recipients_per_message: int
    recipients_per_hour: int
    auth_messages_per_hour: int
    auth_recipients_per_day: int


def limits_for(env: Mapping[str, str], settings: RateLimitSettings) -> Limits | None:
    """The client's limits, or None when rate limiting is off for it."""
    switch = env.get("RATELIMIT")
    if not settings.enabled if switch is None else switch in ("", "0"):
        return None
    values = {key: getattr(settings, key) for key in VARIABLES.values()}
    for variable, key in VARIABLES.items():
        raw = env.get(variable)
        if raw is not None:
            found = _ATOI.match(raw)
            values[key] = int(found.group(1)) if found else 0
    client = switch is not None or "RELAYCLIENT" not in env
    return Limits(client=client, **values)


@functools.lru_cache(maxsize=4096)
def client_key(ip: str) -> str:
    """The address a client is counted by: itself, or its /64 for IPv6."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class RateLimit:
    """The limits of some stages (``context.py`` places one for CONNECT and MAIL early and
    one for RCPT after the recipient checks, so an unknown recipient is not counted)."""

    name = "ratelimit"

    def __init__(
        self,
        settings: RateLimitSettings,
        state: PolicyState,
        executor: Executor,
        stages: frozenset[Stage],
        me: str = "",
        clock: Clock | None = None,
    ) -> None:
        self.stages = stages
        self._settings = settings
        self._state = state
        self._executor = executor
        self._connections = too_many_connections(me)
        self._clock = clock or SystemClock()
        self._reserved = Reservations(state, executor, self._clock)
        # The limits of a client tcp.smtp sets no RATELIMIT variable for (nearly all):
        # computed once, with and without RELAYCLIENT.
        self._plain = (limits_for({}, settings), limits_for({"RELAYCLIENT": ""}, settings))

    def limits(self, env: Mapping[str, str]) -> Limits | None:
        """:func:`limits_for` ``env``, without building it anew for a plain client."""
        if "RATELIMIT" in env or any(variable in env for variable in VARIABLES):
            return limits_for(env, self._settings)
        return self._plain["RELAYCLIENT" in env]

    def check(
        self, stage: Stage, facts: Facts, state: SessionState
    ) -> Verdict | Awaitable[Verdict]:
        limits = self.limits(facts.env)
        if limits is None:
            return PASS
        user = facts.auth_user if facts.authenticated else None
        if stage is Stage.CONNECT:
            if limits.client and limits.connections_per_minute:
                key = f"conn:{client_key(facts.remote_ip)}"
                why = f"connections_per_minute={limits.connections_per_minute}"
                return self._take(
                    key, limits.connections_per_minute, MINUTE, self._connections, why
                )
        elif stage is Stage.MAIL:
            if user is not None:
                if limits.auth_messages_per_hour:
                    why = f"auth_messages_per_hour={limits.auth_messages_per_hour} user={user}"
                    n = limits.auth_messages_per_hour
                    return self._take(f"umsg:{user.lower()}", n, HOUR, USER_MESSAGES, why)
            elif limits.client and limits.messages_per_minute:
                key = f"msg:{client_key(facts.remote_ip)}"
                why = f"messages_per_minute={limits.messages_per_minute}"
                return self._take(key, limits.messages_per_minute, MINUTE, TOO_MANY_MESSAGES, why)
        elif stage is Stage.RCPT:
            per_message = limits.recipients_per_message
            if per_message and len(facts.recipients) >= per_message:
                return Verdict(reply=TOO_MANY_RCPTS, why=f"recipients_per_message={per_message}")
            if user is not None:
                if limits.auth_recipients_per_day:
                    n = limits.auth_recipients_per_day
                    why = f"auth_recipients_per_day={n} user={user}"
                    member = (facts.recipient or "").lower()
                    ask = self._distinct(f"urcpt:{user.lower()}", member, n)
                    return self._answer(ask, USER_RCPTS, why)
            elif limits.client and limits.recipients_per_hour:
                key = f"rcpt:{client_key(facts.remote_ip)}"
                n = limits.recipients_per_hour
                return self._take(key, n, HOUR, TOO_MANY_RCPTS_HOUR, f"recipients_per_hour={n}")
        return PASS

    def _take(
        self, key: str, limit: int, period: float, reply: Reply, why: str
    ) -> Verdict | Awaitable[Verdict]:
        if batch_size(limit) >= 2:
            if self._reserved.take_now(key, limit, period):
                return PASS  # from this worker's batch: no transaction, no thread hop
            return self._batch(key, limit, period, reply, why)
        now = self._clock.time()
        return self._answer(lambda: self._state.take(key, now, limit, period), reply, why)

    async def _batch(self, key: str, limit: int, period: float, reply: Reply, why: str) -> Verdict:
        try:
            allowed = await self._reserved.take(key, limit, period)
        except TemporaryFailure as exc:
            log.warning("ratelimit %s; let through", exc)
            return PASS
        return PASS if allowed else Verdict(reply=reply, why=why)

    def _distinct(self, key: str, member: str, limit: int) -> Callable[[], bool]:
        now = self._clock.time()
        return lambda: self._state.take_distinct(key, member, now, limit, DAY)

    async def _answer(self, ask: Callable[[], bool], reply: Reply, why: str) -> Verdict:
        try:
            allowed = await asyncio.get_running_loop().run_in_executor(self._executor, ask)
        except TemporaryFailure as exc:
            log.warning("ratelimit %s; let through", exc)
            return PASS
        return PASS if allowed else Verdict(reply=reply, why=why)
