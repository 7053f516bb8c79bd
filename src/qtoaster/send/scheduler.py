"""What is due: the messages the manager knows, a heap of their next attempts, and the
operator's holds and retries.

The retry times themselves come from the pure ``queue/schedule.py`` (qmail's schedule);
this module only orders the jobs by them.

Invariants:
- an idle job whose ``next_try`` is finite has an entry in the heap; entries of busy,
  rescheduled or forgotten jobs are stale and dropped when they reach the top, so a
  wake-up costs what is due, not what is queued;
- a job that waits forever (``next_try`` infinite) has no heap entry;
- a held message (``queue/hold/ID``) is never handed out; releasing it schedules it
  again at its ``next_try``.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Iterator

from qtoaster.send.entry import MessageJob


class Scheduler:
    def __init__(self) -> None:
        self.jobs: dict[str, MessageJob] = {}
        self._due: list[tuple[float, str]] = []  # heap of (next_try, qid) of idle jobs
        self.held: set[str] = set()  # ids with a queue/hold/ID marker

    def add(self, job: MessageJob, now: float) -> None:
        """A message read from disk: due at once (as qmail-send after a restart)."""
        if job.qid not in self.jobs:
            job.next_try = now
            self.jobs[job.qid] = job
            self.schedule(job)

    def schedule(self, job: MessageJob) -> None:
        """Put an idle job in the due heap (at its next_try); waiting forever needs no entry."""
        if not math.isinf(job.next_try):
            heapq.heappush(self._due, (job.next_try, job.qid))

    def next_due(self) -> float:
        """The earliest next_try of an idle job; stale heap entries are dropped on the way."""
        while self._due:
            when, qid = self._due[0]
            job = self.jobs.get(qid)
            if job is not None and not job.busy and job.next_try == when:
                return when
            heapq.heappop(self._due)
        return math.inf

    def pop_due(self, now: float) -> Iterator[MessageJob]:
        """Every idle job due by ``now`` and not held, earliest first, off the heap."""
        while self.next_due() <= now:
            _, qid = heapq.heappop(self._due)
            if qid not in self.held:  # released by "~ID", which schedules it again
                yield self.jobs[qid]

    def release(self, job: MessageJob) -> None:
        """A pass is over: the job waits for its next_try again (unless it is gone)."""
        job.busy = False
        if job.qid in self.jobs:
            self.schedule(job)

    def forget(self, qid: str) -> None:
        """The message is gone from the queue (ended, vanished or deleted)."""
        self.jobs.pop(qid, None)
        self.held.discard(qid)

    def forget_missing(self, present: Iterable[str]) -> None:
        """After a full scan: drop idle jobs whose message was deleted behind our back."""
        keep = set(present)
        for qid in [q for q, j in self.jobs.items() if q not in keep and not j.busy]:
            del self.jobs[qid]

    def set_held(self, held: set[str]) -> None:
        """After a full scan: the ids that have a ``queue/hold/ID`` marker now."""
        self.held = held

    def hold_changed(self, qid: str, held: bool) -> None:
        """``~ID`` on the trigger: the marker of ``qid`` was written or removed."""
        if held:
            self.held.add(qid)
            return
        self.held.discard(qid)
        job = self.jobs.get(qid)
        if job is not None and not job.busy:
            self.schedule(job)  # released: due again at its next_try

    def retry(self, wanted: set[str], now: float) -> list[MessageJob]:
        """qmail-send's SIGALRM: every waiting message named in ``wanted`` ("*": all) is
        due at once.  Returns the jobs made due."""
        every = "*" in wanted
        made = []
        for qid, job in self.jobs.items():
            if (every or qid in wanted) and not job.busy:
                job.due = [now, now]
                job.next_try = now
                self.schedule(job)
                made.append(job)
        return made
