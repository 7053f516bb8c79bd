"""Inject the bounce of a message whose failures are final (qmail-send's ``injectbounce``).

The text comes from ``bounce.py`` (qmail's QSBMF, and double bounces) or ``dsn.py``
(RFC 3464, with ``[queue] bounce_format = "dsn"``); this module commits it as a new
message followed by a copy of the original, then records ``B`` through ``results``.

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
from qtoaster.core.clock import Clock
from qtoaster.core.logfields import fields
from qtoaster.queue.format import received_line
from qtoaster.queue.origin import bounce_origin
from qtoaster.queue.store import QueuedMessage, QueueStore, commit_message
from qtoaster.send import results
from qtoaster.send.bounce import BounceParams, build_bounce
from qtoaster.send.entry import MessageJob

log = logging.getLogger("qtoaster.send")

_CHUNK = 65536


class Bouncer:
    def __init__(self, store: QueueStore, controls: Controls, clock: Clock, dsn: bool) -> None:
        self._store = store
        self._controls = controls
        self._clock = clock
        self.dsn = dsn  # RFC 3464 reports instead of qmail's QSBMF

    def bounce(self, job: MessageJob) -> None:
        """Bounce every failure recorded for ``job`` and record ``B``."""
        c = self._controls
        params = BounceParams(c.bouncefrom, c.bouncehost, c.doublebounceto, c.doublebouncehost)
        failures = [(job.recipients[i], job.state.failed[i]) for i in sorted(job.state.failed)]
        now = self._clock.time()
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
            log.info("bounce.discarded %s", fields(msg=job.qid, why="triple bounce"))
        else:
            received = received_line("for bounce", os.getpid(), now)
            chunks = itertools.chain(
                (received, bounce.head), _message_chunks(job.message), (bounce.tail,)
            )
            origin = bounce_origin(job.message.origin, bounce.envelope.recipients)
            bounce_id = commit_message(self._store, bounce.envelope, origin, chunks)
            log.info("bounce %s", fields(msg=job.qid, bounce=bounce_id))
        results.record_bounce(self._store, job, bounce_id)


def _message_chunks(message: QueuedMessage) -> Iterator[bytes]:
    with open(message.path, "rb") as stream:
        stream.seek(message.body_offset)
        while chunk := stream.read(_CHUNK):
            yield chunk
