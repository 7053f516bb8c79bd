"""QueueManager: qmail-send's job on asyncio, wiring the parts of the send role.

It starts from what is on disk and nothing else (DESIGN.md section 3): at start it runs
``store.recover()`` and reads every message (``loader``); afterwards it learns of new
messages and of the operator's commands from the trigger FIFO (``trigger``) and from a
periodic rescan.  ``scheduler`` says what is due; each due message gets one pass over its
lanes (``lanes``: ``locallane``, ``remotelane``), whose results are final and recorded
(``results``); once every recipient is final the failures are bounced (``bouncer``) and
the message is deleted.

Invariants:
- a result is durable in ``state/ID`` before the manager acts on it; the bounce is
  committed and ``B`` recorded before the message is deleted: a crash can repeat a
  delivery or a bounce, never lose one;
- blocking work runs off the loop: deliveries in the lanes, queue I/O (scans, bounces,
  deletions) in one thread;
- each channel keeps its own retry time (spec 15.3: c = 10 local, 20 remote) and a pass
  delivers only the channels that are due; a channel on hold (concurrency 0) never holds
  up the other one; remote recipients wait while there is no remote lane;
- a held message (``queue/hold/ID``) is not delivered until released;
- while a backup's pause request is live (queue/pause.py) nothing is launched, and the
  request is answered only once no delivery is in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from qtoaster.config.control import Controls
from qtoaster.core.clock import Clock
from qtoaster.core.logfields import fields
from qtoaster.queue import schedule
from qtoaster.queue.pause import RECHECK, PauseWatch
from qtoaster.queue.store import NoSuchMessage, QueueStore
from qtoaster.send import notices, results
from qtoaster.send.bouncer import Bouncer
from qtoaster.send.entry import MessageJob
from qtoaster.send.lane import Lane
from qtoaster.send.loader import QueueReader
from qtoaster.send.locallane import FastFuture, LocalAgentLike, LocalLane
from qtoaster.send.remotelane import RemoteAgentLike, RemoteLane
from qtoaster.send.scheduler import Scheduler
from qtoaster.send.signing import OutboundSigner
from qtoaster.send.trigger import TriggerReader, Word, parse_word

log = logging.getLogger("qtoaster.send")

RESCAN_SECONDS = 30.0
HOLD_RECHECK = 60.0  # a channel on hold (concurrency 0) is looked at again this often
SLEEP_SYSFAIL = 123  # qmail-send's pause after a system failure (bounce injection)
STOP_GRACE = 10.0  # seconds deliveries in flight get to finish at shutdown


class HasControls(Protocol):
    @property
    def controls(self) -> Controls: ...


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
        delay_warning: float = 0.0,
        signer: OutboundSigner | None = None,
        pause: PauseWatch | None = None,
    ) -> None:
        self.store = store
        self.controls = config.controls
        self.clock = clock
        c = self.controls
        self.scheduler = Scheduler()
        self._reader = QueueReader(store, c, local_agent.is_local)
        self._io = ThreadPoolExecutor(1, thread_name_prefix="qt-queue-io")
        self._bouncer = Bouncer(store, c, clock, dsn)
        self.delay_warning = delay_warning  # [send] delay_warning; 0 = no delay warnings
        self.local = LocalLane(local_agent, store, c.concurrencylocal, self._settle_fast)
        self.remote: RemoteLane | None = None
        if remote_agent is not None:
            self.remote = RemoteLane(
                remote_agent, store, self._io, c.concurrencyremote, clock, signer
            )
        self.lanes: tuple[Lane, ...] = (self.local,)
        if self.remote is not None:
            self.lanes += (self.remote,)
        self._channels = tuple(lane.channel for lane in self.lanes)
        self._started = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._triggered: set[str] = set()
        self._retry: set[str] = set()  # "!ID" from the trigger; "*" = every message
        self._wake = asyncio.Event()
        self._pause = pause
        self._look_at_pause = pause is not None  # at start, on "^", on a full scan
        self._paused = False
        self.ready = asyncio.Event()  # set once run() listens on the trigger

    @property
    def jobs(self) -> dict[str, MessageJob]:
        return self.scheduler.jobs

    @property
    def agent(self) -> LocalAgentLike:
        return self.local.agent

    # -- driving -------------------------------------------------------------------

    async def run_once(self) -> None:
        """Scan, start every delivery due now, and wait for all of them (tests, tools)."""
        await (self._scan() if self._started else self._start())
        self._launch_due(self.clock.time())
        await self._settle_all()

    async def run(self, stop: asyncio.Event, rescan: float = RESCAN_SECONDS) -> None:
        """Work until ``stop`` is set, then let the deliveries in progress finish."""
        loop = asyncio.get_running_loop()
        trigger = TriggerReader(self.store.trigger, self._trigger_word, self._wake.set)
        # Listen before the first scan: a message committed while it runs (smtpd is up
        # already after a restart) is announced then, and must not wait for the rescan.
        trigger.start(loop)
        try:
            await self._start()
        except BaseException:
            trigger.stop(loop)
            raise
        stopper = asyncio.create_task(stop.wait())
        stopper.add_done_callback(lambda _: self._wake.set())
        next_scan = time.monotonic() + rescan
        self.ready.set()
        try:
            while not stop.is_set():
                self._wake.clear()
                if time.monotonic() >= next_scan:
                    await self._scan()
                    self._look_at_pause = self._pause is not None
                    next_scan = time.monotonic() + rescan
                elif self._triggered:
                    names, self._triggered = sorted(self._triggered), set()
                    await self._scan(names)
                if self._retry:
                    self._retry_now(self.clock.time())
                if not self._check_pause():
                    self._launch_due(self.clock.time())
                delay = min(
                    self.scheduler.next_due() - self.clock.time(), next_scan - time.monotonic()
                )
                if self._paused:  # due jobs wait; a requester that died must not keep us
                    delay = RECHECK
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, delay)):
                        await self._wake.wait()
        finally:
            stopper.cancel()
            trigger.stop(loop)
            await self._stop_deliveries()
            for lane in self.lanes:
                await lane.close()
            self.close()

    async def _stop_deliveries(self) -> None:
        """Let deliveries in flight finish, for at most STOP_GRACE seconds; then cancel the
        rest (a remote dialog can last timeoutremote).  A cancelled delivery was not recorded,
        so it is simply tried again after the restart: at worst a duplicate, never a loss."""
        try:
            async with asyncio.timeout(STOP_GRACE):
                await self._settle_all()
        except TimeoutError:
            log.warning(
                "send stopping: cancelling %d deliveries still in progress", len(self._tasks)
            )
            for task in list(self._tasks):
                task.cancel()
            await self._settle_all()

    async def _settle_all(self) -> None:
        """Wait until no delivery, fast or not, and no follow-up task is in flight."""
        while True:
            fast = self.local.fast_in_flight()
            if not self._tasks and not fast:
                return
            waiting = [asyncio.wrap_future(f) for f in fast]
            await asyncio.gather(*self._tasks, *waiting, return_exceptions=True)
            await asyncio.sleep(0)  # let the fast lane's drain run

    def close(self) -> None:
        for lane in self.lanes:
            lane.shutdown()
        self._io.shutdown(wait=True)

    # -- the trigger's words ---------------------------------------------------------

    def _trigger_word(self, word: str) -> None:
        """A new message id, or an operator's ``!ID``/``!*`` (retry now) or ``~ID`` (hold)."""
        parsed = parse_word(word)
        if parsed is None:
            return
        kind, qid = parsed
        if kind is Word.NEW:
            self._triggered.add(qid)
        elif kind is Word.RETRY:
            self._retry.add(qid)
        elif kind is Word.PAUSE:
            self._look_at_pause = self._pause is not None
        else:
            self.scheduler.hold_changed(qid, (self.store.hold_dir / qid).exists())

    def _retry_now(self, now: float) -> None:
        """qmail-send's SIGALRM: every (or the named) waiting message is due at once, and
        the lanes lift their pauses for it."""
        wanted, self._retry = self._retry, set()
        every = "*" in wanted
        if every:
            for lane in self.lanes:
                lane.retry_now(None)
        for job in self.scheduler.retry(wanted, now):
            if not every:
                for lane in self.lanes:
                    lane.retry_now([job.recipients[i] for i in job.pending(lane.channel)])

    # -- a backup's pause ------------------------------------------------------------

    def _check_pause(self) -> bool:
        """True while a backup asks for a pause; answered once nothing is in flight."""
        if self._pause is None or not (self._paused or self._look_at_pause):
            return False
        self._look_at_pause = False
        token = self._pause.requested()
        if token is None:
            if self._paused:
                self._pause.resume()
                log.info("send deliveries resumed")
            self._paused = False
            return False
        self._paused = True
        if not self._tasks and not self.local.fast_in_flight():
            try:
                if self._pause.acknowledge(token):
                    log.info("send deliveries paused for a backup")
            except OSError as exc:  # the backup waits, then gives up and says so
                log.warning("send warning: unable to answer the pause request: %s", exc)
        return True

    # -- launching -------------------------------------------------------------------

    def _launch_due(self, now: float) -> None:
        """Start every job due by ``now``: O(due), however many wait in the queue."""
        held: list[MessageJob] = []
        for job in self.scheduler.pop_due(now):
            if self._channels_on_hold(job):
                held.append(job)  # concurrency 0: the channel is on hold (15.2)
                continue
            job.busy = True
            if (
                len(job.recipients) == 1
                and job.pending_local() == [0]
                and not notices.wanted(job, self.delay_warning, now)
            ):
                dying = schedule.is_dying(job.message.birth, now, self.controls.queuelifetime)
                self.local.start_fast(job, dying)
                continue
            self._spawn(self._process(job, now))
        for job in held:
            job.next_try = now + HOLD_RECHECK
            self.scheduler.schedule(job)

    def _channels_on_hold(self, job: MessageJob) -> bool:
        """Every lane the job still needs is on hold: nothing to do until a restart."""
        needed = [lane for lane in self.lanes if job.pending(lane.channel)]
        return bool(needed) and all(lane.held() for lane in needed)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("send internal error in queue manager", exc_info=task.exception())

    # -- scanning ------------------------------------------------------------------

    async def _start(self) -> None:
        self._started = True
        loop = asyncio.get_running_loop()
        for line in await loop.run_in_executor(self._io, self.store.recover):
            log.warning("send recover: %s", line)
        await self._scan()

    async def _scan(self, names: list[str] | None = None) -> None:
        loop = asyncio.get_running_loop()
        sched = self.scheduler
        jobs = await loop.run_in_executor(self._io, self._reader.read, names, sched.jobs)
        now = self.clock.time()
        for job in jobs:
            sched.add(job, now)
        if names is None:  # a full scan also forgets messages deleted behind our back
            sched.set_held(await loop.run_in_executor(self._io, self.store.held))
            sched.forget_missing(await loop.run_in_executor(self._io, self.store.ids))

    # -- one pass over a message ---------------------------------------------------

    async def _process(self, job: MessageJob, now: float) -> None:
        try:
            dying = schedule.is_dying(job.message.birth, now, self.controls.queuelifetime)
            passes = []
            for lane in self.lanes:
                pending = job.pending(lane.channel)
                if not pending:
                    continue
                if lane.held():
                    job.due[lane.channel] = now + HOLD_RECHECK
                elif job.due[lane.channel] <= now:
                    passes.append(self._pass(lane, job, pending, now, dying))
            found = await asyncio.gather(*passes)
            if not all(found):
                log.warning("send warning: msg %s vanished from the queue", job.qid)
                self.scheduler.forget(job.qid)
                return
            job.reschedule(self._channels)
            if not any(job.pending(ch) for ch in self._channels):
                await self._finish(job)
            elif self.delay_warning:
                await notices.warn_if_due(self._io, self._bouncer, job, self.delay_warning, now)
        finally:
            self.scheduler.release(job)

    async def _pass(
        self, lane: Lane, job: MessageJob, pending: list[int], now: float, dying: bool
    ) -> bool:
        """One lane's deliveries for ``job``; False if the message vanished."""
        done = await lane.deliver(job, pending, dying)
        if done is None:
            return False
        results.note_all(job, done)
        job.due[lane.channel] = schedule.next_retry(job.message.birth, now, lane.skip)
        return True

    # -- the fast lane's outcomes ----------------------------------------------------

    def _settle_fast(self, batch: list[tuple[MessageJob, FastFuture]]) -> None:
        """On the loop, once per batch of finished one-recipient local deliveries."""
        now = self.clock.time()
        for job, future in batch:
            self._settle_one_fast(job, future, now)
        self._wake.set()

    def _settle_one_fast(self, job: MessageJob, future: FastFuture, now: float) -> None:
        exc = future.exception()
        if exc is not None:
            log.error("send internal error in queue manager", exc_info=exc)
            job.next_try = now + SLEEP_SYSFAIL
            self.scheduler.release(job)
            return
        outcome = future.result()
        if outcome is None:
            log.warning("send warning: msg %s vanished from the queue", job.qid)
            self.scheduler.forget(job.qid)
            return
        result, ended = outcome
        results.note(job, 0, result)
        if ended:
            self.scheduler.forget(job.qid)
            log.info("end.msg %s", fields(msg=job.qid))
        elif job.pending_local():
            job.due[self.local.channel] = schedule.next_retry(
                job.message.birth, now, self.local.skip
            )
            job.reschedule(self._channels)
            self.scheduler.release(job)
        else:  # final but not ended (a failure to bounce, or the delete failed): the slow path
            self._spawn(self._finish_and_release(job))

    async def _finish_and_release(self, job: MessageJob) -> None:
        try:
            await self._finish(job)
        finally:
            self.scheduler.release(job)

    # -- the end of a message --------------------------------------------------------

    async def _finish(self, job: MessageJob) -> None:
        """Every recipient a lane can deliver is final: bounce the failures, then end the
        message unless recipients wait for a lane that is missing."""
        loop = asyncio.get_running_loop()
        if job.state.failed and job.state.bounce is None:
            try:
                await loop.run_in_executor(self._io, self._bouncer.bounce, job)
            except Exception as exc:
                log.warning(
                    "send warning: trouble injecting bounce message for %s, will try later: %s",
                    job.qid,
                    exc,
                )
                job.next_try = self.clock.time() + SLEEP_SYSFAIL
                return
        if not job.left() and not await notices.notify_delivered(self._io, self._bouncer, job):
            job.next_try = self.clock.time() + SLEEP_SYSFAIL
            return
        if job.left():
            # Without a remote agent the recipients wait for one (serve send without it).
            job.reschedule(self._channels)
            return
        try:
            await loop.run_in_executor(self._io, self.store.delete, job.qid)
        except NoSuchMessage:
            pass
        except OSError as exc:
            log.warning("send warning: unable to delete msg %s, will try later: %s", job.qid, exc)
            job.next_try = self.clock.time() + SLEEP_SYSFAIL
            return
        self.scheduler.forget(job.qid)
        log.info("end.msg %s", fields(msg=job.qid))
