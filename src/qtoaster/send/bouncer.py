"""Inject the bounce of a message whose failures are final (qmail-send's ``injectbounce``).

The text comes from ``bounce.py`` (qmail's QSBMF, and double bounces) or ``dsn.py``
(RFC 3464, with ``[queue] bounce_format = "dsn"``); this module commits it as a new
message followed by a copy of the original, then records ``B`` through ``results``.

RFC 3461: a recipient whose NOTIFY leaves out FAILURE (``NEVER`` among them) is left out of
the bounce (no bounce at all when none is left); ``RET=HDRS`` returns only the header of
the message.  :meth:`Bouncer.notify` and :meth:`Bouncer.warn` inject the success and delay
notices (``notice.py``); the delay warning is recorded ``W`` and the success notice ``S``,
so each is sent once.

Invariants: the bounce is committed (fsynced) before ``B`` is recorded, and ``B`` before
the message may be deleted: a crash repeats a bounce, never loses one.  A failed double
bounce is discarded ("triple bounce") and recorded as ``B -``.  Blocking: runs in the
manager's queue I/O thread.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator

from qtoaster.config.control import Controls
from qtoaster.core import dsn as dsnp
from qtoaster.core.clock import Clock
from qtoaster.core.logfields import fields
from qtoaster.queue import state
from qtoaster.queue.format import received_line
from qtoaster.queue.origin import bounce_origin
from qtoaster.queue.store import QueuedMessage, QueueStore, commit_message
from qtoaster.send import results
from qtoaster.send.bounce import Bounce, BounceParams, build_bounce
from qtoaster.send.entry import MessageJob
from qtoaster.send.notice import NoticeRecipient, build_notice

log = logging.getLogger("qtoaster.send")

_CHUNK = 65536


class Bouncer:
    def __init__(self, store: QueueStore, controls: Controls, clock: Clock, dsn: bool) -> None:
        self._store = store
        self._controls = controls
        self._clock = clock
        self.dsn = dsn  # RFC 3464 reports instead of qmail's QSBMF

    @property
    def _params(self) -> BounceParams:
        c = self._controls
        return BounceParams(c.bouncefrom, c.bouncehost, c.doublebounceto, c.doublebouncehost)

    def bounce(self, job: MessageJob) -> None:
        """Bounce every failure recorded for ``job`` whose NOTIFY allows it; record ``B``."""
        c = self._controls
        message_dsn = job.message.dsn
        wanted = [
            i for i in sorted(job.state.failed) if dsnp.notifies(message_dsn.rcpt(i), dsnp.FAILURE)
        ]
        failures = [(job.recipients[i], job.state.failed[i]) for i in wanted]
        now = self._clock.time()
        sender = job.message.envelope.sender
        bounce: Bounce | None = None
        if not failures:
            log.info("bounce.discarded %s", fields(msg=job.qid, why="NOTIFY without FAILURE"))
        elif self.dsn:
            from qtoaster.send.dsn import build_dsn

            bounce = build_dsn(
                sender,
                failures,
                self._params,
                now,
                reporting_mta=c.me,
                arrival=job.message.birth,
                envid=message_dsn.mail.envid,
                orcpts=_orcpts(job, wanted),
            )
            if bounce is None:
                log.info("bounce.discarded %s", fields(msg=job.qid, why="triple bounce"))
        else:
            bounce = build_bounce(sender, failures, self._params, now)
            if bounce is None:
                log.info("bounce.discarded %s", fields(msg=job.qid, why="triple bounce"))
        bounce_id: str | None = None
        if bounce is not None:
            headers_only = message_dsn.mail.ret == "HDRS"  # RFC 3461 4.3
            origin = bounce_origin(job.message.origin, bounce.envelope.recipients)
            bounce_id = self._inject(bounce, job.message, origin, headers_only)
            log.info("bounce %s", fields(msg=job.qid, bounce=bounce_id))
        results.record_bounce(self._store, job, bounce_id)

    def notify(self, job: MessageJob, delivered: list[tuple[int, str]]) -> str | None:
        """The success notice for ``delivered`` (index, action) whose NOTIFY has SUCCESS;
        ``S`` recorded (fsynced) once it is queued, so it is never sent twice."""
        wanted = [
            (i, action)
            for i, action in delivered
            if dsnp.notifies(job.message.dsn.rcpt(i), dsnp.SUCCESS)
        ]
        notice_id = self._notice(job, wanted)
        if notice_id is not None:
            state.append(
                self._store.state_path(job.qid),
                [state.notified(notice_id)],
                fsync=self._store.fsync,
                sync_dir=self._store.state_sync.sync,
            )
            job.state.notified = notice_id
            log.info("dsn.success %s", fields(msg=job.qid, notice=notice_id))
        return notice_id

    def warn(self, job: MessageJob, pending: list[int]) -> None:
        """The delay warning for ``pending`` recipients whose NOTIFY allows DELAY; ``W``
        recorded (``W -`` when none may be told) so it is never sent twice."""
        from qtoaster.send.notice import DELAYED

        wanted = [
            (i, DELAYED) for i in pending if dsnp.notifies(job.message.dsn.rcpt(i), dsnp.DELAY)
        ]
        notice_id = self._notice(job, wanted)
        state.append(
            self._store.state_path(job.qid),
            [state.warned(notice_id)],
            fsync=self._store.fsync,
            sync_dir=self._store.state_sync.sync,
        )
        job.state.warned = notice_id or "-"
        if notice_id is not None:
            log.info("dsn.delay %s", fields(msg=job.qid, notice=notice_id))

    def _notice(self, job: MessageJob, wanted: list[tuple[int, str]]) -> str | None:
        if not wanted:
            return None
        rcpts = [NoticeRecipient(job.recipients[i], action, "") for i, action in wanted]
        notice = build_notice(
            job.message.envelope.sender,
            rcpts,
            self._params,
            self._clock.time(),
            reporting_mta=self._controls.me,
            arrival=job.message.birth,
            headers=b"".join(_header_chunks(job.message)),
            envid=job.message.dsn.mail.envid,
            orcpts=_orcpts(job, [i for i, _ in wanted]),
        )
        if notice is None:
            return None
        origin = bounce_origin(job.message.origin, notice.envelope.recipients)
        return self._inject(notice, None, origin, False)

    def _inject(
        self, bounce: Bounce, message: QueuedMessage | None, origin: str, headers_only: bool
    ) -> str:
        received = received_line("for bounce", os.getpid(), self._clock.time())
        copy: Iterator[bytes] = iter(())
        if message is not None:
            copy = _header_chunks(message) if headers_only else _message_chunks(message)
        chunks = itertools.chain((received, bounce.head), copy, (bounce.tail,))
        return commit_message(self._store, bounce.envelope, origin, chunks)


def _orcpts(job: MessageJob, indexes: list[int]) -> dict[str, str]:
    out: dict[str, str] = {}
    for i in indexes:
        orcpt = job.message.dsn.rcpt(i).orcpt
        if orcpt is not None:
            out[job.recipients[i]] = orcpt
    return out


def _header_chunks(message: QueuedMessage) -> Iterator[bytes]:
    """The message's header with the empty line that ends it (all of it if it has none)."""
    with open(message.path, "rb") as stream:
        stream.seek(message.body_offset)
        while line := stream.readline(_CHUNK):
            yield line
            if line == b"\n":
                return


def _message_chunks(message: QueuedMessage) -> Iterator[bytes]:
    with open(message.path, "rb") as stream:
        stream.seek(message.body_offset)
        while chunk := stream.read(_CHUNK):
            yield chunk
