"""QueueManager: qmail-send's job for the local channel, on asyncio.

It starts from what is on disk and nothing else (DESIGN.md section 3): at start it
runs ``store.recover()`` and reads every ``mess/`` and ``state/`` file; afterwards it
learns of new messages from the trigger FIFO and from a periodic rescan.

Invariants:
- A permanent failure (``F``) is fsynced to ``state/ID`` before the manager acts on
  it; a success needs no fsync (the Maildir copy is durable, and losing the ``D``
  record can only repeat a delivery), nor any record for a one-recipient message.
  The bounce is committed before ``B`` is recorded; the message is deleted only
  after that.  A crash can repeat a delivery or a bounce, never lose one.
- Blocking work (agent deliveries, fsyncs, directory lookups) runs in thread pools:
  deliveries in one bounded by concurrencylocal, queue I/O in a single thread.
- Unreadable entries are moved to ``bad/`` and logged once, never retried.
- Local and remote recipients keep their own retry times (spec 15.3: c = 10 and 20); a
  pass delivers only the channels that are due.  Remote recipients of one message go out
  per domain, one connection each, bounded by concurrencyremote and by the destination's
  politeness window (``remote/politeness.py``).  Without a remote agent they wait.
- A held message (``queue/hold/ID``) is not delivered until released; the operator's
  commands reach the running manager through the trigger FIFO (``!ID`` or ``!*``: retry now,
  ``~ID``: hold or release changed).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import math
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from qtoaster.config.control import Controls, ascii_lower
from qtoaster.core.clock import Clock
from qtoaster.core.errors import TemporaryFailure
from qtoaster.core.outcome import Outcome, Result
from qtoaster.queue import schedule, state
from qtoaster.queue.format import BadQueueFile, received_line
from qtoaster.queue.state import MessageState
from qtoaster.queue.store import NoSuchMessage, QueuedMessage, QueueStore, commit_message, is_qid
from qtoaster.send import lspawn
from qtoaster.send.bounce import BounceParams, build_bounce
from qtoaster.send.lspawn import DeliveryPool
from qtoaster.send.remote import RemoteAgentLike, RemoteChannel

log = logging.getLogger("qtoaster.send")

RESCAN_SECONDS = 30.0
HOLD_RECHECK = 60.0  # a channel on hold (concurrency 0) is looked at again this often
SLEEP_SYSFAIL = 123  # qmail-send's pause after a system failure (bounce injection)
STOP_GRACE = 10.0  # seconds deliveries in flight get to finish at shutdown
_CHUNK = 65536


class HasControls(Protocol):
    @property
    def controls(self) -> Controls: ...


class LocalAgentLike(lspawn.Agent, Protocol):
    def is_local(self, recipient: str) -> bool: ...


@dataclass
class Job:
    message: QueuedMessage
    recipients: tuple[str, ...]  # after rewriting (spec 15.1 steps 1-2)
    local: tuple[bool, ...]
    state: MessageState
    next_try: float
    busy: bool = False
    due_local: float = 0.0  # each channel has its own retry time (spec 15.3)
    due_remote: float = 0.0

    @property
    def qid(self) -> str:
        return self.message.qid

    def pending_local(self) -> list[int]:
        done = self.state.done
        return [i for i, loc in enumerate(self.local) if loc and i not in done]

    def pending_remote(self) -> list[int]:
        done = self.state.done
        return [i for i, loc in enumerate(self.local) if not loc and i not in done]

    def remote_left(self) -> bool:
        done = self.state.done
        return any(not loc and i not in done for i, loc in enumerate(self.local))

    def reschedule(self, remote: bool) -> None:
        """next_try: the earliest retry time among the channels with recipients left."""
        dues = []
        if self.pending_local():
            dues.append(self.due_local)
        if remote and self.pending_remote():
            dues.append(self.due_remote)
        self.next_try = min(dues, default=math.inf)


def rewrite(recipient: str, envnoathost: str, percenthack: frozenset[str]) -> str:
    """qmail-send's rewriting owned by the queue: no ``@`` -> ``@envnoathost``; then
    percenthack turns ``u%h@dom`` into ``u@h`` while the domain is listed."""
    if "@" not in recipient:
        recipient = f"{recipient}@{envnoathost}"
    local, _, domain = recipient.rpartition("@")
    while ascii_lower(domain) in percenthack and "%" in local:
        local, _, domain = local.rpartition("%")
    return f"{local}@{domain}"


_LOGSAFE = {i: "_" for i in range(32)} | {10: "/", 127: "_"}


def logsafe(text: str) -> str:
    """qmail-send's logsafe: LF -> ``/``, other control bytes -> ``_``."""
    return text.translate(_LOGSAFE)


DELIVERY_WORKERS = 4
FastFuture = Future[lspawn.Outcome_]


class QueueManager:
    def __init__(
        self,
        store: QueueStore,
        config: HasControls,
        local_agent: LocalAgentLike,
        clock: Clock,
        remote_agent: RemoteAgentLike | None = None,
        *,
        dsn: bool = False,
    ) -> None:
        self.store = store
        self.controls = config.controls
        self.agent = local_agent
        self.clock = clock
        self.jobs: dict[str, Job] = {}
        self._due: list[tuple[float, str]] = []  # heap of (next_try, qid) of idle jobs
        self._fast: dict[FastFuture, Job] = {}  # fast-lane deliveries in flight
        self._fast_lock = threading.Lock()
        self._fast_results: list[FastFuture] = []  # finished, waiting for the loop
        self._fast_wake_pending = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._triggered: set[str] = set()
        self._wake = asyncio.Event()
        self.ready = asyncio.Event()  # set once run() listens on the trigger
        concurrency = self.controls.concurrencylocal
        self._slots = asyncio.Semaphore(max(1, concurrency))
        # concurrencylocal bounds deliveries in flight; the threads that run them are
        # fewer, since more only fight over the GIL (measured fastest on 2 cores).
        workers = max(1, min(concurrency, DELIVERY_WORKERS))
        self._pool = DeliveryPool(local_agent, store, workers)
        self._io = ThreadPoolExecutor(1, thread_name_prefix="qt-queue-io")
        self.remote: RemoteChannel | None = None
        if remote_agent is not None:
            self.remote = RemoteChannel(
                remote_agent, store, self._io, self.controls.concurrencyremote, clock
            )
        self.dsn = dsn  # bounces as RFC 3464 reports instead of qmail's QSBMF
        self._held: set[str] = set()  # ids with a queue/hold/ID marker
        self._retry: set[str] = set()  # "!ID" from the trigger; "*" = every message

    # -- driving -------------------------------------------------------------------

    async def run_once(self) -> None:
        """Scan, start every delivery due now, and wait for all of them (tests, tools)."""
        await (self._scan() if self._started else self._start())
        self._launch_due(self.clock.time())
        await self._settle_all()

    async def run(self, stop: asyncio.Event, rescan: float = RESCAN_SECONDS) -> None:
        """Work until ``stop`` is set, then let the deliveries in progress finish."""
        await self._start()
        loop = asyncio.get_running_loop()
        fd = self._open_trigger()
        if fd is not None:
            loop.add_reader(fd, self._on_trigger, fd)
        stopper = asyncio.create_task(stop.wait())
        stopper.add_done_callback(lambda _: self._wake.set())
        next_scan = time.monotonic() + rescan
        self.ready.set()
        try:
            while not stop.is_set():
                self._wake.clear()
                if time.monotonic() >= next_scan:
                    await self._scan()
                    next_scan = time.monotonic() + rescan
                elif self._triggered:
                    names, self._triggered = sorted(self._triggered), set()
                    await self._scan(names)
                if self._retry:
                    self._retry_now(self.clock.time())
                self._launch_due(self.clock.time())
                delay = min(self._next_due() - self.clock.time(), next_scan - time.monotonic())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, delay)):
                        await self._wake.wait()
        finally:
            stopper.cancel()
            if fd is not None:
                loop.remove_reader(fd)
                os.close(fd)
            await self._stop_deliveries()
            if self.remote is not None:
                await self.remote.close()
            self.close()

    async def _stop_deliveries(self) -> None:
        """Let deliveries in flight finish, for at most STOP_GRACE seconds; then cancel the
        rest (a remote dialog can last timeoutremote).  A cancelled delivery was not recorded,
        so it is simply tried again after the restart: at worst a duplicate, never a loss."""
        try:
            async with asyncio.timeout(STOP_GRACE):
                await self._settle_all()
        except TimeoutError:
            log.warning("stopping: cancelling %d deliveries still in progress", len(self._tasks))
            for task in list(self._tasks):
                task.cancel()
            await self._settle_all()

    async def _settle_all(self) -> None:
        """Wait until no delivery, fast or not, and no follow-up task is in flight."""
        while self._tasks or self._fast:
            fast = [asyncio.wrap_future(f) for f in self._fast]
            await asyncio.gather(*self._tasks, *fast, return_exceptions=True)
            await asyncio.sleep(0)  # let the fast lane's drain run

    def close(self) -> None:
        self._pool.shutdown()
        self._io.shutdown(wait=True)

    def _open_trigger(self) -> int | None:
        # O_RDWR keeps a writer open ourselves, so the FIFO never reports EOF in a loop.
        try:
            return os.open(self.store.trigger, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            log.warning("warning: unable to open trigger %s: %s", self.store.trigger, exc)
            return None

    def _on_trigger(self, fd: int) -> None:
        with contextlib.suppress(BlockingIOError):
            while data := os.read(fd, 65536):
                for word in data.decode("ascii", "replace").split():
                    self._trigger_word(word)
        self._wake.set()

    def _trigger_word(self, word: str) -> None:
        """A new message id, or an operator's ``!ID``/``!*`` (retry now) or ``~ID`` (hold)."""
        if is_qid(word):
            self._triggered.add(word)
        elif word == "!*" or (word[:1] == "!" and is_qid(word[1:])):
            self._retry.add(word[1:])
        elif word[:1] == "~" and is_qid(word[1:]):
            self._hold_changed(word[1:])

    def _hold_changed(self, qid: str) -> None:
        if (self.store.hold_dir / qid).exists():
            self._held.add(qid)
            return
        self._held.discard(qid)
        job = self.jobs.get(qid)
        if job is not None and not job.busy:
            self._schedule(job)  # released: due again at its next_try

    def _retry_now(self, now: float) -> None:
        """qmail-send's SIGALRM: every (or the named) waiting message is due at once."""
        wanted, self._retry = self._retry, set()
        if "*" in wanted and self.remote is not None:
            self.remote.retry_now()
        for qid, job in self.jobs.items():
            if ("*" in wanted or qid in wanted) and not job.busy:
                if self.remote is not None and "*" not in wanted:
                    self.remote.retry_now([job.recipients[i] for i in job.pending_remote()])
                job.due_local = job.due_remote = now
                job.next_try = now
                self._schedule(job)

    def _schedule(self, job: Job) -> None:
        """Put an idle job in the due heap (at its next_try); waiting forever needs no entry."""
        if not math.isinf(job.next_try):
            heapq.heappush(self._due, (job.next_try, job.qid))

    def _next_due(self) -> float:
        """The earliest next_try of an idle job; stale heap entries are dropped on the way."""
        while self._due:
            when, qid = self._due[0]
            job = self.jobs.get(qid)
            if job is not None and not job.busy and job.next_try == when:
                return when
            heapq.heappop(self._due)
        return math.inf

    def _launch_due(self, now: float) -> list[asyncio.Task[None]]:
        """Start every job due by ``now``: O(due), however many wait in the queue."""
        started = []
        held: list[Job] = []
        while self._next_due() <= now:
            _, qid = heapq.heappop(self._due)
            job = self.jobs[qid]
            if qid in self._held:
                continue  # released by "~ID" on the trigger, which schedules it again
            if self._channel_on_hold(job):
                held.append(job)  # concurrency 0: the channel is on hold (15.2)
                continue
            job.busy = True
            if len(job.recipients) == 1 and job.pending_local() == [0]:
                self._launch_fast(job, now)
                continue
            task = asyncio.create_task(self._process(job, now))
            self._tasks.add(task)
            task.add_done_callback(self._task_done)
            started.append(task)
        for job in held:
            job.next_try = now + HOLD_RECHECK
            self._schedule(job)
        return started

    def _held_channels(self, job: Job) -> tuple[bool, bool]:
        """(local, remote): which of the job's channels with recipients left are on hold
        (concurrency 0, spec 15.2).  A held channel never holds up the other one."""
        c = self.controls
        local = bool(job.pending_local()) and c.concurrencylocal == 0
        remote = self.remote is not None and bool(job.pending_remote())
        return local, remote and c.concurrencyremote == 0

    def _channel_on_hold(self, job: Job) -> bool:
        """Every channel the job still needs is on hold: nothing to do until a reload."""
        local, remote = self._held_channels(job)
        needs_local = bool(job.pending_local())
        needs_remote = self.remote is not None and bool(job.pending_remote())
        return (local or not needs_local) and (remote or not needs_remote) and (local or remote)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("internal error in queue manager", exc_info=task.exception())

    # -- scanning ------------------------------------------------------------------

    async def _start(self) -> None:
        self._started = True
        loop = asyncio.get_running_loop()
        for line in await loop.run_in_executor(self._io, self.store.recover):
            log.warning("recover: %s", line)
        await self._scan()

    async def _scan(self, names: list[str] | None = None) -> None:
        loop = asyncio.get_running_loop()
        jobs = await loop.run_in_executor(self._io, self._scan_blocking, names)
        now = self.clock.time()
        for job in jobs:
            if job.qid not in self.jobs:
                job.next_try = now
                self.jobs[job.qid] = job
                self._schedule(job)
        if names is None:  # a full scan also forgets messages deleted behind our back
            self._held = await loop.run_in_executor(self._io, self.store.held)
            present = set(await loop.run_in_executor(self._io, self.store.ids))
            for qid in [q for q, j in self.jobs.items() if q not in present and not j.busy]:
                del self.jobs[qid]

    def _scan_blocking(self, names: list[str] | None) -> list[Job]:
        jobs = []
        for qid in self.store.ids() if names is None else names:
            if qid in self.jobs:
                continue
            try:
                jobs.append(self._load_job(qid))
            except NoSuchMessage:
                continue
            except TemporaryFailure as exc:
                # The directory is down (routing needs it): leave the message queued; the
                # periodic rescan picks it up again.
                log.warning("deferring msg %s: %s", qid, exc)
                continue
            except BadQueueFile as exc:
                log.error("alert: moving unreadable msg %s to bad/: %s", qid, exc)
                try:
                    self.store.move_to_bad(qid)
                except OSError as err:
                    log.error("alert: unable to move msg %s to bad/: %s", qid, err)
        return jobs

    def _load_job(self, qid: str) -> Job:
        message = self.store.load(qid)
        recorded = state.read_state(self.store.state_path(qid))
        c = self.controls
        recipients = tuple(
            rewrite(r, c.envnoathost, c.percenthack) for r in message.envelope.recipients
        )
        local = tuple(self.agent.is_local(r) for r in recipients)
        log.info(
            "new msg %s: bytes %d from <%s> origin %s",
            qid,
            message.size,
            logsafe(message.envelope.sender),
            logsafe(message.origin),
        )
        return Job(message, recipients, local, recorded, next_try=0.0)

    # -- one pass over a message ---------------------------------------------------

    async def _process(self, job: Job, now: float) -> None:
        try:
            dying = schedule.is_dying(job.message.birth, now, self.controls.queuelifetime)
            local_held, remote_held = self._held_channels(job)
            passes = []
            if local_held:
                job.due_local = now + HOLD_RECHECK
            elif job.pending_local() and job.due_local <= now:
                passes.append(self._local_pass(job, now, dying))
            if remote_held:
                job.due_remote = now + HOLD_RECHECK
            elif self.remote is not None and job.pending_remote() and job.due_remote <= now:
                passes.append(self._remote_pass(job, now, dying))
            found = await asyncio.gather(*passes)
            if not all(found):
                log.warning("warning: msg %s vanished from the queue", job.qid)
                self.jobs.pop(job.qid, None)
                return
            job.reschedule(remote=self.remote is not None)
            if not job.pending_local() and (self.remote is None or not job.pending_remote()):
                await self._finish(job)
        finally:
            self._release(job)

    async def _local_pass(self, job: Job, now: float, dying: bool) -> bool:
        pending = job.pending_local()
        found = await asyncio.gather(*(self._deliver(job, i, dying) for i in pending))
        job.due_local = schedule.next_retry(job.message.birth, now, schedule.LOCAL_SKIP)
        return all(found)

    async def _remote_pass(self, job: Job, now: float, dying: bool) -> bool:
        assert self.remote is not None
        pending = [(i, job.recipients[i]) for i in job.pending_remote()]
        several = len(job.recipients) > 1
        results = await self.remote.deliver(job.message, pending, several, dying)
        if results is None:
            return False
        for idx, result in results:
            self._record(job, idx, result)
        job.due_remote = schedule.next_retry(job.message.birth, now, schedule.REMOTE_SKIP)
        return True

    def _release(self, job: Job) -> None:
        job.busy = False
        if job.qid in self.jobs:
            self._schedule(job)

    # -- the fast lane: one local recipient, the common case ------------------------
    #
    # One trip to a pool thread does it all (deliver, record, delete); results come
    # back in batches through one loop wake-up, not one future and task per message.

    def _launch_fast(self, job: Job, now: float) -> None:
        dying = schedule.is_dying(job.message.birth, now, self.controls.queuelifetime)
        self._loop = asyncio.get_running_loop()
        future = self._pool.submit(self._request(job, 0, dying, end=not job.remote_left()))
        self._fast[future] = job
        future.add_done_callback(self._fast_done)  # first callback: runs before any waiter

    def _request(self, job: Job, idx: int, dying: bool, end: bool = False) -> lspawn.Request:
        message = job.message
        return lspawn.Request(
            qid=job.qid,
            path=str(message.path),
            body_offset=message.body_offset,
            sender=message.envelope.sender,
            recipient=job.recipients[idx],
            idx=idx,
            several=len(job.recipients) > 1,
            dying=dying,
            end=end,
        )

    def _fast_done(self, future: FastFuture) -> None:
        """In the pool thread: queue the result; wake the loop once per batch."""
        with self._fast_lock:
            self._fast_results.append(future)
            if self._fast_wake_pending:
                return
            self._fast_wake_pending = True
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._drain_fast)

    def _drain_fast(self) -> None:
        with self._fast_lock:
            done, self._fast_results = self._fast_results, []
            self._fast_wake_pending = False
        now = self.clock.time()
        for future in done:
            self._settle_fast(self._fast.pop(future), future, now)
        self._wake.set()

    def _settle_fast(self, job: Job, future: FastFuture, now: float) -> None:
        exc = future.exception()
        if exc is not None:
            log.error("internal error in queue manager", exc_info=exc)
            job.next_try = now + SLEEP_SYSFAIL
            self._release(job)
            return
        outcome = future.result()
        if outcome is None:
            log.warning("warning: msg %s vanished from the queue", job.qid)
            self.jobs.pop(job.qid, None)
            return
        result, ended = outcome
        self._record(job, 0, result)
        if ended:
            self.jobs.pop(job.qid, None)
            log.info("end msg %s", job.qid)
        elif job.pending_local():
            job.due_local = schedule.next_retry(job.message.birth, now, schedule.LOCAL_SKIP)
            job.reschedule(remote=self.remote is not None)
            self._release(job)
        else:  # final but not ended (a failure to bounce, remote left): the slow path
            task = asyncio.create_task(self._finish_and_release(job))
            self._tasks.add(task)
            task.add_done_callback(self._task_done)

    async def _finish_and_release(self, job: Job) -> None:
        try:
            await self._finish(job)
        finally:
            self._release(job)

    async def _deliver(self, job: Job, idx: int, dying: bool) -> bool:
        """Deliver one recipient of a message with several (the general path).

        Returns False if the message vanished from the queue.
        """
        async with self._slots:
            future = self._pool.submit(self._request(job, idx, dying))
            outcome = await asyncio.wrap_future(future)
        if outcome is None:
            return False
        self._record(job, idx, outcome[0])
        return True

    def _record(self, job: Job, idx: int, result: Result) -> None:
        """Note a result in memory (the disk has it already) and log it."""
        if result.outcome is Outcome.SUCCESS:
            job.state.delivered.add(idx)
        elif result.outcome is Outcome.PERMANENT:
            job.state.failed[idx] = result.report
        log.info(
            "delivery %s: %s: %s %s",
            job.qid,
            result.outcome.value,
            logsafe(job.recipients[idx]),
            logsafe(result.report),
        )

    async def _finish(self, job: Job) -> None:
        """Every local recipient is final: bounce the failures, then end the message."""
        loop = asyncio.get_running_loop()
        if job.state.failed and job.state.bounce is None:
            try:
                await loop.run_in_executor(self._io, self._bounce_blocking, job)
            except Exception as exc:
                log.warning(
                    "warning: trouble injecting bounce message for %s, will try later: %s",
                    job.qid,
                    exc,
                )
                job.next_try = self.clock.time() + SLEEP_SYSFAIL
                return
        if job.remote_left():
            # Without a remote agent the recipients wait for one (serve send without it).
            job.reschedule(remote=self.remote is not None)
            return
        try:
            await loop.run_in_executor(self._io, self.store.delete, job.qid)
        except NoSuchMessage:
            pass
        except OSError as exc:
            log.warning("warning: unable to delete msg %s, will try later: %s", job.qid, exc)
            job.next_try = self.clock.time() + SLEEP_SYSFAIL
            return
        self.jobs.pop(job.qid, None)
        self._held.discard(job.qid)
        log.info("end msg %s", job.qid)

    def _bounce_blocking(self, job: Job) -> None:
        c = self.controls
        params = BounceParams(c.bouncefrom, c.bouncehost, c.doublebounceto, c.doublebouncehost)
        failures = [(job.recipients[i], job.state.failed[i]) for i in sorted(job.state.failed)]
        now = self.clock.time()
        sender = job.message.envelope.sender
        if self.dsn:
            from qtoaster.send.dsn import build_dsn

            bounce = build_dsn(
                sender, failures, params, now, reporting_mta=c.me, arrival=job.message.birth
            )
        else:
            bounce = build_bounce(sender, failures, params, now)
        bounce_id: str | None = None
        if bounce is None:
            log.info("triple bounce: discarding bounce/%s", job.qid)
        else:
            received = received_line("for bounce", os.getpid(), now)
            chunks = itertools.chain(
                (received, bounce.head), _message_chunks(job.message), (bounce.tail,)
            )
            bounce_id = commit_message(self.store, bounce.envelope, "bounce", chunks)
            log.info("bounce msg %s qp %s", job.qid, bounce_id)
        state.append(
            self.store.state_path(job.qid),
            [state.bounced(bounce_id)],
            fsync=self.store.fsync,
            sync_dir=self.store.state_sync.sync,
        )
        job.state.bounce = bounce_id or "-"


def _message_chunks(message: QueuedMessage) -> Iterator[bytes]:
    with open(message.path, "rb") as stream:
        stream.seek(message.body_offset)
        while chunk := stream.read(_CHUNK):
            yield chunk
