"""The local lane: the synchronous local agent run in a pool of threads (qmail-lspawn's job).

:func:`deliver_and_record` is the whole job for one recipient, in one trip to a pool
thread: deliver, apply the rules and record the result (``results``), and with ``end``
delete the message once it is done.

Two ways in:
- :meth:`LocalLane.deliver` (the :class:`~qtoaster.send.lane.Lane` interface): some
  recipients of a message, at most concurrencylocal in flight;
- the fast lane, :meth:`LocalLane.start_fast`: a message with one local recipient, the
  common case.  No task and no asyncio future per message: the pool thread queues the
  outcome and wakes the loop once per batch, and the manager settles the batch.

Why threads and not qmail-lspawn's processes: we measured both on 2 cores (1 KB and
100 KB, 20 sessions, end to end): worker processes cut the GIL hand-offs of the
manager but cost more in pickling, IPC and scheduling, and delivered 25-40% fewer
messages per second than four threads.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from qtoaster.core.outcome import Outcome, Result
from qtoaster.queue import schedule
from qtoaster.queue.store import NoSuchMessage, QueueStore
from qtoaster.send import results
from qtoaster.send.entry import LOCAL, MessageJob
from qtoaster.send.results import Results

log = logging.getLogger("qtoaster.send")

DELIVERY_WORKERS = 4  # more threads only fight over the GIL (measured fastest on 2 cores)


class LocalAgentLike(Protocol):
    """delivery/local.py's LocalAgent: synchronous, one recipient, the queue file's path."""

    def is_local(self, recipient: str) -> bool: ...

    def deliver(self, message: str, body_offset: int, sender: str, recipient: str) -> Result: ...


@dataclass(frozen=True, slots=True)
class LocalRequest:
    qid: str
    path: str
    body_offset: int
    sender: str
    recipient: str
    idx: int
    several: bool  # the message has more than one recipient: keep a D record
    dying: bool  # past queuelifetime: a temporary failure becomes permanent
    end: bool  # delete the message after a success (nothing else left to do)


FastResult = tuple[Result, bool] | None  # (result, message deleted); None: it vanished
FastFuture = Future[FastResult]
# Called on the loop with a batch of finished fast-lane deliveries.
FastSettle = Callable[[list[tuple[MessageJob, FastFuture]]], None]


def deliver_and_record(agent: LocalAgentLike, store: QueueStore, req: LocalRequest) -> FastResult:
    if not os.path.exists(req.path):
        return None
    try:
        result = agent.deliver(req.path, req.body_offset, req.sender, req.recipient)
    except Exception as exc:  # an agent bug must not lose the message: retry later
        result = results.agent_raised("local", req.qid, exc)
    result = results.final(result, req.dying)
    ((_, recorded),) = results.record(store, req.qid, [(req.idx, result)], req.several)
    if recorded is not result:  # the record failed: a temporary failure now
        return recorded, False
    ended = False
    if req.end and result.outcome is Outcome.SUCCESS:
        try:
            store.delete(req.qid)
            ended = True
        except NoSuchMessage:
            ended = True
        except OSError as exc:
            log.warning("send warning: unable to delete msg %s, will try later: %s", req.qid, exc)
    return result, ended


class LocalLane:
    channel = LOCAL
    skip = schedule.LOCAL_SKIP

    def __init__(
        self,
        agent: LocalAgentLike,
        store: QueueStore,
        concurrency: int,
        settle_fast: FastSettle,
    ) -> None:
        self.agent = agent
        self._store = store
        self._concurrency = concurrency
        self._slots = asyncio.Semaphore(max(1, concurrency))
        # concurrencylocal bounds deliveries in flight; the threads that run them are fewer.
        workers = max(1, min(concurrency, DELIVERY_WORKERS))
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="qt-local")
        self._settle_fast = settle_fast
        self._fast: dict[FastFuture, MessageJob] = {}  # fast-lane deliveries in flight
        self._fast_lock = threading.Lock()
        self._fast_done: list[FastFuture] = []  # finished, waiting for the loop
        self._fast_wake_pending = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def held(self) -> bool:
        return self._concurrency == 0

    async def deliver(self, job: MessageJob, indexes: Sequence[int], dying: bool) -> Results | None:
        found = await asyncio.gather(*(self._one(job, i, dying) for i in indexes))
        if any(r is None for r in found):
            return None
        return [r for r in found if r is not None]

    async def _one(self, job: MessageJob, idx: int, dying: bool) -> tuple[int, Result] | None:
        async with self._slots:
            future = self._submit(job, idx, dying, end=False)
            outcome = await asyncio.wrap_future(future)
        return None if outcome is None else (idx, outcome[0])

    def _submit(self, job: MessageJob, idx: int, dying: bool, end: bool) -> FastFuture:
        message = job.message
        req = LocalRequest(
            qid=job.qid,
            path=str(message.path),
            body_offset=message.body_offset,
            sender=message.envelope.sender,
            recipient=job.recipients[idx],
            idx=idx,
            several=job.several,
            dying=dying,
            end=end,
        )
        return self._pool.submit(deliver_and_record, self.agent, self._store, req)

    # -- the fast lane -------------------------------------------------------------

    def start_fast(self, job: MessageJob, dying: bool) -> None:
        """Deliver, record and delete ``job`` (one local recipient) in one pool trip."""
        self._loop = asyncio.get_running_loop()
        future = self._submit(job, 0, dying, end=True)
        self._fast[future] = job
        future.add_done_callback(self._fast_finished)  # first callback: before any waiter

    def fast_in_flight(self) -> list[FastFuture]:
        return list(self._fast)

    def _fast_finished(self, future: FastFuture) -> None:
        """In the pool thread: queue the outcome; wake the loop once per batch."""
        with self._fast_lock:
            self._fast_done.append(future)
            if self._fast_wake_pending:
                return
            self._fast_wake_pending = True
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._drain_fast)

    def _drain_fast(self) -> None:
        with self._fast_lock:
            done, self._fast_done = self._fast_done, []
            self._fast_wake_pending = False
        self._settle_fast([(self._fast.pop(future), future) for future in done])

    # -- Lane housekeeping ---------------------------------------------------------

    def retry_now(self, recipients: Sequence[str] | None) -> None:
        """Nothing to lift: local deliveries are never paused."""

    async def close(self) -> None:
        """The local agent holds nothing open."""

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)
