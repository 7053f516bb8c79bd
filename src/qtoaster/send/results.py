"""The one place where a recipient's result becomes final: qmail-send's rules, the durable
record in ``state/ID``, and the ``delivery`` log line.

Rules, in this order, for every lane:
1. an agent that raised gives TEMPORARY (an internal error never bounces mail), logged
   with its traceback;
2. on a dying message (its attempt started after ``queuelifetime``) a TEMPORARY becomes
   PERMANENT, with qmail's "too long" sentence appended (``queue/schedule.py``).

Records (docs/queue.md, "The state file"):
- ``F`` is appended and fsynced (and ``state/`` with the file's first append) before
  anyone acts on the failure;
- ``D`` (``D <idx> dsn`` for a next hop that got the DSN request) is appended unsynced,
  and only when the message has several recipients: the copy is durable at its
  destination already, so a lost ``D`` only repeats a delivery, and a one-recipient
  message is deleted right after;
- a temporary result is never recorded (the retry time lives in memory);
- a result that cannot be recorded becomes TEMPORARY: the delivery is repeated
  (at-least-once), never lost;
- ``B`` (the bounce is committed) is fsynced before the message may be deleted.

The record functions block (file I/O); the lanes call them from their threads.
:func:`note` then updates the in-memory state and logs, on the manager's loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from qtoaster.core.logfields import fields
from qtoaster.core.outcome import Outcome, Result
from qtoaster.metrics import definitions as metrics
from qtoaster.queue import schedule, state
from qtoaster.queue.store import QueueStore
from qtoaster.send.entry import LOCAL, MessageJob

log = logging.getLogger("qtoaster.send")

CHANNELS = ("local", "remote")  # the metrics' names of send.entry.LOCAL and REMOTE
Results = list[tuple[int, Result]]  # (recipient index, its result)

# What an agent that raised reports, per lane (the texts are kept as qmail-style reports).
_INTERNAL = {
    "local": "Internal error in delivery: {exc}. (#4.3.0)",
    "remote": "Internal error in remote delivery: {exc}. (#4.3.0)",
}
UNRECORDED = "Trouble recording the delivery: {exc}. (#4.3.0)"

_LOGSAFE = {i: "_" for i in range(32)} | {10: "/", 127: "_"}


def logsafe(text: str) -> str:
    """qmail-send's logsafe: LF -> ``/``, other control bytes -> ``_``."""
    return text.translate(_LOGSAFE)


def agent_raised(lane: str, qid: str, exc: Exception) -> Result:
    """Rule 1: the agent of ``lane`` raised ``exc`` (call from the ``except`` block)."""
    log.exception("internal-error %s", fields(msg=qid, where=f"{lane} agent"))
    return Result(Outcome.TEMPORARY, _INTERNAL[lane].format(exc=exc))


def final(result: Result, dying: bool) -> Result:
    """Rule 2: a dying message's temporary failure is its last: permanent."""
    if dying and result.outcome is Outcome.TEMPORARY:
        return Result(Outcome.PERMANENT, schedule.expire_report(result.report))
    return result


def needs_record(results: Results, several: bool) -> bool:
    """Whether :func:`record` would write anything (lets a lane skip a thread hop)."""
    for _, result in results:
        if result.outcome is Outcome.PERMANENT or (several and result.outcome is Outcome.SUCCESS):
            return True
    return False


def record(store: QueueStore, qid: str, results: Results, several: bool) -> Results:
    """Append the final results to ``state/qid``; returns what the manager may act on:
    ``results`` itself, or all TEMPORARY if the record could not be written."""
    path = store.state_path(qid)
    try:
        failed = [state.failed(i, r.report) for i, r in results if r.outcome is Outcome.PERMANENT]
        if failed:
            state.append(path, failed, fsync=store.fsync, sync_dir=store.state_sync.sync)
        if several:
            ok = [state.delivered(i, r.dsn) for i, r in results if r.outcome is Outcome.SUCCESS]
            if ok:
                state.append(path, ok, fsync=False)
    except OSError as exc:
        unrecorded = Result(Outcome.TEMPORARY, UNRECORDED.format(exc=exc))
        return [(idx, unrecorded) for idx, _ in results]
    return results


def record_bounce(store: QueueStore, job: MessageJob, bounce_id: str | None) -> None:
    """``B``: the bounce for every ``F`` so far is committed (None: none was needed)."""
    state.append(
        store.state_path(job.qid),
        [state.bounced(bounce_id)],
        fsync=store.fsync,
        sync_dir=store.state_sync.sync,
    )
    job.state.bounce = bounce_id or "-"


def note(job: MessageJob, idx: int, result: Result) -> None:
    """Note a recorded result in memory (the disk has it already) and log it."""
    if result.outcome is Outcome.SUCCESS:
        job.state.delivered.add(idx)
        if result.dsn:
            job.state.passed_on.add(idx)
    elif result.outcome is Outcome.PERMANENT:
        job.state.failed[idx] = result.report
    metrics.delivery(result.outcome.value, CHANNELS[job.channel[idx]], job.message.birth)
    log.info(
        "delivery %s",
        fields(
            msg=job.qid,
            to=job.recipients[idx],
            channel="local" if job.channel[idx] == LOCAL else "remote",
            result=result.outcome.value,
            delay=f"{max(time.time() - job.message.birth, 0.0):.3f}",
            report=result.report,
        ),
    )


def note_all(job: MessageJob, results: Sequence[tuple[int, Result]]) -> None:
    for idx, result in results:
        note(job, idx, result)
