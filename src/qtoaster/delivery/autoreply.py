"""Answer a delivered message for a user on vacation: read, decide, queue, remember.

Called by the local agent after the message is in the user's INBOX (not for a copy filed
into .Junk, a forward, or a program).  The decision and the reply are
:mod:`~qtoaster.delivery.vacation`'s; who was answered when is
:mod:`~qtoaster.delivery.vacationstate`'s; the reply is queued like every message we
make (bounces, forwards: ``queue.store.commit_message``) with the null envelope sender
(RFC 3834 5.1) and origin ``vacation``.

Invariant: nothing here can fail the delivery: the message is stored already, and a
reply that cannot be made or queued is logged and not remembered (the next message from
that sender tries again).
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable, Iterable
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32

from qtoaster.core.envelope import Envelope
from qtoaster.core.logfields import fields
from qtoaster.delivery.instructions import DeliveryJob
from qtoaster.delivery.vacation import Reply, decide
from qtoaster.delivery.vacationstate import opened
from qtoaster.directory.model import Vacation
from qtoaster.queue.format import received_line

log = logging.getLogger("qtoaster.send")

HEADER_MAX = 64 * 1024  # header bytes read to decide
# Queues the reply: (envelope, chunks) -> queue id.
ReplyInjector = Callable[[Envelope, Iterable[bytes]], str]


def answer(
    job: DeliveryJob,
    user: str,
    vacation: Vacation,
    inject: ReplyInjector,
    now: float,
) -> str | None:
    """Reply to ``job``'s message for ``user`` if the setting says so; the reply's queue
    id, or None (no reply, or it failed: logged either way)."""
    if not vacation.active(now):
        return None
    try:
        head = _header(job)
        with opened(job.home) as seen:
            message_id = f"<{int(now)}.{secrets.token_hex(8)}.vacation@{job.hostname}>"
            addresses = (user, job.recipient)
            decision = decide(
                head, job.sender, user, addresses, vacation, seen.last(job.sender), now, message_id
            )
            if not isinstance(decision, Reply):
                log.info("vacation.skipped %s", fields(user=user, to=job.sender, why=decision.why))
                return None
            received = received_line("for vacation", os.getpid(), now)
            qid = inject(Envelope("", (decision.to,)), (received, decision.message))
            seen.record(job.sender, now, vacation.period)
    except Exception as exc:  # the message is delivered: never fail it for its reply
        log.warning("vacation.failed %s", fields(user=user, to=job.sender, why=str(exc)))
        return None
    log.info("vacation.sent %s", fields(user=user, to=job.sender, reply=qid))
    return qid


def _header(job: DeliveryJob) -> Message:
    source = job.rewind()
    lines = []
    read = 0
    while read < HEADER_MAX:
        line = source.readline(HEADER_MAX - read)
        if line in (b"", b"\n", b"\r\n"):
            break
        read += len(line)
        lines.append(line)
    return BytesHeaderParser(policy=compat32).parsebytes(b"".join(lines))
