"""Per-destination politeness for remote delivery: how many connections a domain gets, and
a pause after it could not be reached.

qmail spreads retries per message only (spec 15.3), so a domain whose hosts are down is hit
by every queued message on its own schedule.  Like Postfix's dead-destination handling, a
domain none of whose hosts answered is *paused*: other messages for it are deferred without
a connection until the pause ends (60 s, doubling per further failure, at most an hour),
and its concurrency drops to one connection until a delivery gets through again.

Invariants: a pause never makes a message skip its last attempt (the caller tries a dying
message anyway); a success ends the pause at once; nothing here blocks the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

FIRST_PAUSE = 60.0
MAX_PAUSE = 3600.0


@dataclass
class _Domain:
    failures: int = 0
    paused_until: float = 0.0
    active: int = 0
    wake: asyncio.Condition = field(default_factory=asyncio.Condition)


class Politeness:
    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self._domains: dict[str, _Domain] = {}

    def paused_until(self, domain: str, now: float) -> float | None:
        """When the pause of ``domain`` ends, or None if it may be tried now."""
        entry = self._domains.get(domain)
        if entry is None or entry.paused_until <= now:
            return None
        return entry.paused_until

    def window(self, domain: str) -> int:
        entry = self._domains.get(domain)
        return 1 if entry is not None and entry.failures else self.limit

    @contextlib.asynccontextmanager
    async def slot(self, domain: str) -> AsyncIterator[None]:
        """Hold one of the domain's connections for the duration of a delivery."""
        entry = self._domains.setdefault(domain, _Domain())
        async with entry.wake:
            await entry.wake.wait_for(lambda: entry.active < self.window(domain))
            entry.active += 1
        try:
            yield
        finally:
            async with entry.wake:
                entry.active -= 1
                entry.wake.notify_all()
            self._forget_if_idle(domain, entry)

    def report(self, domain: str, reached: bool, now: float) -> None:
        """After an attempt: ``reached`` False pauses the domain, True clears any pause."""
        entry = self._domains.setdefault(domain, _Domain())
        if reached:
            entry.failures = 0
            entry.paused_until = 0.0
        else:
            entry.failures += 1
            pause = min(FIRST_PAUSE * 2 ** (entry.failures - 1), MAX_PAUSE)
            entry.paused_until = now + pause
        self._forget_if_idle(domain, entry)

    def resume(self, domain: str | None = None) -> None:
        """An operator asked for a retry: end the pause of ``domain`` (None: of every one)."""
        for name, entry in list(self._domains.items()):
            if domain is None or name == domain:
                entry.failures = 0
                entry.paused_until = 0.0
                self._forget_if_idle(name, entry)

    def _forget_if_idle(self, domain: str, entry: _Domain) -> None:
        if entry.active == 0 and entry.failures == 0:
            self._domains.pop(domain, None)
