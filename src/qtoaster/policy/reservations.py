"""A worker's reservations of events from the shared rate-limit buckets, so that most
events cost no state transaction and no thread hop (issue 18's benchmark bar;
docs/decisions/0020-greylist-ratelimit-state.md "Batches").

A bucket with a limit of N per period is asked for a batch of ``k = min(N // 10,``
:data:`BATCH_MAX` ``)`` events at once; the worker hands them out from memory, one per
event, for at most :data:`LEASE_SECONDS`, then gives back what it did not use (one
transaction, off the event loop). Below ``k = 2`` (limits under 20) every event asks the
state, exactly as without reservations.

Exactness: a batch is counted in the shared bucket when it is reserved, so no client ever
gets more than its limit; and the state grants a batch only while the bucket stays at
most half used, one event at a time after that. So a client can be refused at most
``(workers - 1) * (k - 1)`` events early (what the other workers still hold), and only
until their leases end, within :data:`LEASE_SECONDS`. A worker that ends (or reloads)
with a lease open forgets it: at most ``k - 1`` events counted that never happened, which
the bucket refills like any other.

Invariants: everything here runs on the worker's event loop (no locks); at most one
reservation per bucket is in flight per worker, the events that arrive meanwhile wait for
its answer (a task that installs the lease before it completes); a state failure is
the caller's (it lets the event through).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from dataclasses import dataclass

from qtoaster.core.clock import Clock
from qtoaster.policy.state import PolicyState

log = logging.getLogger("qtoaster.policy.ratelimit")

BATCH_MAX = 64  # events reserved at once, at most
LEASE_SECONDS = 1.0  # a reservation's life before its unused events go back
LEASES_MAX = 10_000  # buckets a worker holds reservations for, at most


def batch_size(limit: int) -> int:
    """Events reserved at once for a limit (below 2: none, every event asks the state)."""
    return min(limit // 10, BATCH_MAX)


@dataclass(slots=True)
class _Lease:
    left: int  # events not handed out yet
    until: float  # clock time the lease ends
    limit: int
    period: float


class Reservations:
    """The batches one worker holds, by bucket name."""

    def __init__(self, state: PolicyState, executor: Executor, clock: Clock) -> None:
        self._state = state
        self._executor = executor
        self._clock = clock
        self._leases: dict[str, _Lease] = {}
        self._pending: dict[str, asyncio.Future[int]] = {}

    def take_now(self, name: str, limit: int, period: float) -> bool:
        """One event from this worker's lease on ``name``, if it holds one (no I/O)."""
        lease = self._leases.get(name)
        if lease is None or lease.left <= 0 or lease.until <= self._clock.time():
            return False
        lease.left -= 1
        return True

    async def take(self, name: str, limit: int, period: float) -> bool:
        """One event: from the lease, else from a new batch (raises the state's errors)."""
        while not self.take_now(name, limit, period):
            pending = self._pending.get(name)
            if pending is None:
                pending = asyncio.ensure_future(self._reserve(name, limit, period))
                self._pending[name] = pending
            # The task installs the lease before it completes, so its waiters find it;
            # another worker's session may empty it first: then this one asks again.
            if await asyncio.shield(pending) == 0:  # no room in the bucket
                return False
        return True

    async def _reserve(self, name: str, limit: int, period: float) -> int:
        try:
            now = self._clock.time()
            old = self._leases.pop(name, None)
            back = old.left if old is not None else 0
            args = (name, now, limit, period, batch_size(limit), back)
            loop = asyncio.get_running_loop()
            granted = await loop.run_in_executor(self._executor, self._state.take_batch, *args)
            if granted > 0:
                if len(self._leases) >= LEASES_MAX:
                    self._give_back_all()
                lease = _Lease(granted, now + LEASE_SECONDS, limit, period)
                self._leases[name] = lease
                loop.call_later(LEASE_SECONDS, self._expired, name, lease)
            return granted
        finally:
            del self._pending[name]

    def _expired(self, name: str, lease: _Lease) -> None:
        if self._leases.get(name) is lease:
            del self._leases[name]
            self._give_back(name, lease)

    def _give_back_all(self) -> None:
        leases, self._leases = self._leases, {}
        for name, lease in leases.items():
            self._give_back(name, lease)

    def _give_back(self, name: str, lease: _Lease) -> None:
        if lease.left <= 0:
            return
        now = self._clock.time()
        args = (name, now, lease.limit, lease.period, 0, lease.left)
        future = asyncio.get_running_loop().run_in_executor(
            self._executor, self._state.take_batch, *args
        )
        future.add_done_callback(_log_failure)


def _log_failure(future: asyncio.Future[int]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("ratelimit giving back a reservation: %s", future.exception())
