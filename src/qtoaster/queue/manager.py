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
- Remote recipients are left untouched (remote delivery is not written yet).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from qtoaster.config.control import Controls, ascii_lower
from qtoaster.core.clock import Clock
from qtoaster.delivery.base import Outcome, Result
from qtoaster.queue import schedule, state
from qtoaster.queue.bounce import BounceParams, build_bounce
from qtoaster.queue.format import BadQueueFile, received_line
from qtoaster.queue.state import MessageState
from qtoaster.queue.store import NoSuchMessage, QueuedMessage, QueueStore, commit_message, is_qid

log = logging.getLogger("qtoaster.send")

RESCAN_SECONDS = 30.0
SLEEP_SYSFAIL = 123  # qmail-send's pause after a system failure (bounce injection)
_CHUNK = 65536


class HasControls(Protocol):
    @property
    def controls(self) -> Controls: ...


class LocalAgentLike(Protocol):
    def is_local(self, recipient: str) -> bool: ...

    def deliver(self, message: Path, body_offset: int, sender: str, recipient: str) -> Result: ...


@dataclass
class Job:
    message: QueuedMessage
    recipients: tuple[str, ...]  # after rewriting (spec 15.1 steps 1-2)
    local: tuple[bool, ...]
    state: MessageState
    next_try: float
    busy: bool = False

    @property
    def qid(self) -> str:
        return self.message.qid

    def pending_local(self) -> list[int]:
        done = self.state.done
        return [i for i, loc in enumerate(self.local) if loc and i not in done]

    def remote_left(self) -> bool:
        done = self.state.done
        return any(not loc and i not in done for i, loc in enumerate(self.local))


def rewrite(recipient: str, envnoathost: str, percenthack: frozenset[str]) -> str:
    """qmail-send's rewriting owned by the queue: no ``@`` -> ``@envnoathost``; then
    percenthack turns ``u%h@dom`` into ``u@h`` while the domain is listed."""
    if "@" not in recipient:
        recipient = f"{recipient}@{envnoathost}"
    local, _, domain = recipient.rpartition("@")
    while ascii_lower(domain) in percenthack and "%" in local:
        local, _, domain = local.rpartition("%")
    return f"{local}@{domain}"


def logsafe(text: str) -> str:
    """qmail-send's logsafe: LF -> ``/``, other control bytes -> ``_``."""
    return "".join("/" if c == "\n" else "_" if ord(c) < 32 or c == "\x7f" else c for c in text)


DELIVERY_THREADS = 4


class QueueManager:
    def __init__(
        self, store: QueueStore, config: HasControls, local_agent: LocalAgentLike, clock: Clock
    ) -> None:
        self.store = store
        self.controls = config.controls
        self.agent = local_agent
        self.clock = clock
        self.jobs: dict[str, Job] = {}
        self._started = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._triggered: set[str] = set()
        self._wake = asyncio.Event()
        self.ready = asyncio.Event()  # set once run() listens on the trigger
        concurrency = self.controls.concurrencylocal
        self._slots = asyncio.Semaphore(max(1, concurrency))
        # concurrencylocal bounds deliveries in flight; the threads that run them are
        # fewer, since more threads than this only fight over the GIL (measured: 4
        # threads deliver fsynced Maildir files fastest on 2 cores).
        threads = max(1, min(concurrency, DELIVERY_THREADS))
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="qt-local")
        self._io = ThreadPoolExecutor(1, thread_name_prefix="qt-queue-io")

    # -- driving -------------------------------------------------------------------

    async def run_once(self) -> None:
        """Scan, start every delivery due now, and wait for all of them (tests, tools)."""
        await (self._scan() if self._started else self._start())
        await asyncio.gather(*self._launch_due(self.clock.time()))

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
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
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
                words = data.decode("ascii", "replace").split()
                self._triggered.update(w for w in words if is_qid(w))
        self._wake.set()

    def _next_due(self) -> float:
        due = [j.next_try for j in self.jobs.values() if not j.busy]
        return min(due, default=math.inf)

    def _launch_due(self, now: float) -> list[asyncio.Task[None]]:
        started = []
        for job in list(self.jobs.values()):
            if job.busy or job.next_try > now:
                continue
            if job.pending_local() and self.controls.concurrencylocal == 0:
                continue  # concurrencylocal 0: the local channel is on hold (spec 15.2)
            job.busy = True
            task = asyncio.create_task(self._process(job, now))
            self._tasks.add(task)
            task.add_done_callback(self._task_done)
            started.append(task)
        return started

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
        if names is None:  # a full scan also forgets messages deleted behind our back
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
            pending = job.pending_local()
            if pending:
                if not job.message.path.exists():
                    log.warning("warning: msg %s vanished from the queue", job.qid)
                    del self.jobs[job.qid]
                    return
                dying = schedule.is_dying(job.message.birth, now, self.controls.queuelifetime)
                if len(job.recipients) == 1 and pending == [0]:
                    # The common case, in one trip to the pool: deliver, then end.
                    if await self._deliver(job, 0, dying, end=True):
                        self.jobs.pop(job.qid, None)
                        log.info("end msg %s", job.qid)
                        return
                else:
                    await asyncio.gather(*(self._deliver(job, i, dying) for i in pending))
                job.next_try = schedule.next_retry(job.message.birth, now, schedule.LOCAL_SKIP)
            if not job.pending_local():
                await self._finish(job)
        finally:
            job.busy = False

    async def _deliver(self, job: Job, idx: int, dying: bool, end: bool = False) -> bool:
        """Deliver one recipient; with ``end``, also delete a message that is then done.

        Returns whether the message was deleted.
        """
        loop = asyncio.get_running_loop()
        recipient = job.recipients[idx]
        async with self._slots:
            try:
                result, ended = await loop.run_in_executor(
                    self._pool, self._deliver_blocking, job, idx, dying, end
                )
            except OSError as exc:
                log.error("warning: trouble recording delivery of msg %s: %s", job.qid, exc)
                return False
        if result.outcome is Outcome.SUCCESS:
            job.state.delivered.add(idx)
        elif result.outcome is Outcome.PERMANENT:
            job.state.failed[idx] = result.report
        log.info(
            "delivery %s: %s: %s %s",
            job.qid,
            result.outcome.value,
            logsafe(recipient),
            logsafe(result.report),
        )
        return ended

    def _deliver_blocking(
        self, job: Job, idx: int, dying: bool, end: bool = False
    ) -> tuple[Result, bool]:
        """Deliver one recipient and record a final result durably (in a pool thread)."""
        message = job.message
        try:
            result = self.agent.deliver(
                message.path, message.body_offset, message.envelope.sender, job.recipients[idx]
            )
        except Exception as exc:  # an agent bug must not lose the message: retry later
            log.exception("local agent raised for msg %s", job.qid)
            result = Result(Outcome.TEMPORARY, f"Internal error in delivery: {exc}. (#4.3.0)")
        if result.outcome is Outcome.TEMPORARY and dying:
            result = Result(Outcome.PERMANENT, schedule.expire_report(result.report))
        if result.outcome is Outcome.SUCCESS:
            # The mail is durable in the Maildir already.  A lost success record can only
            # cause a second delivery (at-least-once), so it is not fsynced, and a message
            # with one recipient, deleted right after, needs no record at all.
            if len(job.recipients) > 1:
                state.append(self.store.state_path(job.qid), [state.delivered(idx)], fsync=False)
        elif result.outcome is Outcome.PERMANENT:
            state.append(
                self.store.state_path(job.qid),
                [state.failed(idx, result.report)],
                fsync=self.store.fsync,
                sync_dir=self.store.state_sync.sync,
            )
        ended = False
        if end and result.outcome is Outcome.SUCCESS and not job.remote_left():
            try:
                self.store.delete(job.qid)
                ended = True
            except NoSuchMessage:
                ended = True
            except OSError as exc:
                log.warning("warning: unable to delete msg %s, will try later: %s", job.qid, exc)
        return result, ended

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
            job.next_try = math.inf  # waits for the remote channel
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
        log.info("end msg %s", job.qid)

    def _bounce_blocking(self, job: Job) -> None:
        c = self.controls
        params = BounceParams(c.bouncefrom, c.bouncehost, c.doublebounceto, c.doublebouncehost)
        failures = [(job.recipients[i], job.state.failed[i]) for i in sorted(job.state.failed)]
        now = self.clock.time()
        bounce = build_bounce(job.message.envelope.sender, failures, params, now)
        bounce_id: str | None = None
        if bounce is None:
            log.info("triple bounce: discarding bounce/%s", job.qid)
        else:
            received = received_line("for bounce", os.getpid(), now)
            chunks = itertools.chain((received, bounce.head), _message_chunks(job.message))
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
