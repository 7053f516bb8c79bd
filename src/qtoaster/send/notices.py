"""When the manager sends success and delay notices (RFC 3461), off its loop.

- Success: once every recipient is final, the delivered ones whose NOTIFY has SUCCESS get
  one notice, ``Action: delivered`` for local recipients and ``relayed`` for remote ones
  whose next hop did not offer DSN (RFC 3461 5.2.2: it will send none, so we say so).  A
  recipient relayed to a hop that offered DSN got the request with the message (``D <idx>
  dsn``, ``Result.dsn``): its notice is that hop's job (5.2.3), none comes from us.  The
  notice is queued, then ``S`` recorded, then the message deleted: a crash before ``S``
  can repeat it (at-least-once, like bounces), one after it does not, and none is lost.
- Delay: Postfix's ``delay_warning_time``: once a message has been queued ``[send]
  delay_warning`` seconds with recipients still being retried, one warning to the sender
  for those whose NOTIFY allows DELAY (the default, core/dsn.py).  ``W`` in ``state/ID``
  records it, so a restart does not send it again; until it is sent the message is due
  no later than ``birth + delay_warning``.

Invariant: nothing here blocks the loop; the file I/O runs in the manager's queue thread.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor

from qtoaster.send.bouncer import Bouncer
from qtoaster.send.entry import LOCAL, MessageJob
from qtoaster.send.notice import DELIVERED, RELAYED

log = logging.getLogger("qtoaster.send")


def wanted(job: MessageJob, delay_warning: float, now: float) -> bool:
    """The message may need a notice: it cannot take the one-recipient fast lane, which
    deletes it without the manager seeing it end."""
    from qtoaster.core import dsn

    if dsn.notifies(job.message.dsn.rcpt(0), dsn.SUCCESS):
        return True
    return warning_due(job, delay_warning, now)


def warning_due(job: MessageJob, delay_warning: float, now: float) -> bool:
    return (
        delay_warning > 0
        and job.state.warned is None
        and now >= job.message.birth + delay_warning
        and job.left()
    )


async def warn_if_due(
    io: Executor, bouncer: Bouncer, job: MessageJob, delay_warning: float, now: float
) -> None:
    """After a pass that left recipients waiting: the warning if due, else the job is due
    again no later than when it will be."""
    if job.state.warned is not None:
        return
    if not warning_due(job, delay_warning, now):
        job.next_try = min(job.next_try, job.message.birth + delay_warning)
        return
    pending = [i for i in range(len(job.recipients)) if i not in job.state.done]
    try:
        await asyncio.get_running_loop().run_in_executor(io, bouncer.warn, job, pending)
    except Exception as exc:  # tried again at the next pass
        log.warning("send warning: trouble injecting delay warning for %s: %s", job.qid, exc)


async def notify_delivered(io: Executor, bouncer: Bouncer, job: MessageJob) -> bool:
    """The success notice, if any recipient asked for one; False if it could not be made."""
    if job.state.notified is not None or job.message.dsn.empty:
        return True  # sent before a crash or a failed delete (``S``), or none was asked
    delivered = [
        (i, DELIVERED if job.channel[i] == LOCAL else RELAYED)
        for i in sorted(job.state.delivered - job.state.passed_on)
    ]
    if not delivered:
        return True
    try:
        await asyncio.get_running_loop().run_in_executor(io, bouncer.notify, job, delivered)
    except Exception as exc:
        log.warning(
            "send warning: trouble injecting success notice for %s, will try later: %s",
            job.qid,
            exc,
        )
        return False
    return True
