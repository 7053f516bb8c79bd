"""Hand one received message to an external qmail-queue program (QMAILQUEUE, spec 13).

When QMAILQUEUE is set (process environment or a tcp.smtp rule), qmail-smtpd runs that
program instead of qmail-queue, with qmail-queue's interface (qmail-queue(8)): the
message on fd 0, the envelope ``F<sender>\\0(T<rcpt>\\0)*\\0`` on fd 1, and the answer
only in the exit code, which qmail.c ``qmail_close`` maps to the SMTP reply.  Filters
such as simscan end by exec'ing the real queue: here ``qtoaster queue-inject``.

Invariants:
- the program is exec'd directly (no shell, argv is just its path, as qmail's
  ``execv``); a relative path is resolved from the qtoaster home, where it also runs
  (qmail-smtpd's working directory is the qmail home);
- fd 0 is a fresh read-only descriptor on the spool file positioned at the message:
  the child reads the file itself, no byte goes through Python;
- the event loop never blocks: the envelope is written through a non-blocking pipe and
  the child awaited with a deadline; on the deadline the child's whole process group is
  killed (a wrapper's scanners too) and the answer is qq timeout (52);
- every descriptor opened here is closed on every path, and the child is always reaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from qtoaster.core.envelope import Envelope
from qtoaster.core.reply import Reply
from qtoaster.queue import exitcodes

log = logging.getLogger("qtoaster.smtpd")

MessageSource = str | os.PathLike[str] | BinaryIO


@dataclass(frozen=True, slots=True)
class QueueOutcome:
    """What the queue program answered.

    ``reply`` is None when the message was queued: the caller answers
    :func:`accepted_reply` (``250 ok <time> qp <pid>``); otherwise it is the 451/554
    reply to send as is.  ``pid`` is the child's pid (qmail's ``qp``), None if it never ran.
    """

    reply: Reply | None
    pid: int | None

    @property
    def queued(self) -> bool:
        return self.reply is None


def accepted_reply(pid: int, now: float) -> Reply:
    """qmail-smtpd's success reply (spec 3.6): ``250 ok <unix-time> qp <pid>``."""
    return Reply(250, f"ok {int(now)} qp {pid}")


def resolve_program(program: str, home: Path) -> str:
    """An absolute path is used as is; a relative one is taken from the home (qmail's rule)."""
    return program if os.path.isabs(program) else str(home / program)


async def run_qmailqueue(
    program: str,
    env: Mapping[str, str],
    message: MessageSource,
    offset: int,
    envelope: Envelope,
    *,
    home: Path,
    timeout: float,
) -> QueueOutcome:
    """Run ``program`` as qmail-queue for one message and map its exit to a reply.

    ``message`` is the spool file (a path, or an open file object, flushed here) whose
    message bytes start at ``offset``.  ``env`` is the child's whole environment (the
    connection's tcp.smtp variables over the process environment, as tcpserver passes
    them); QTOASTER_HOME is added so a wrapper's ``qtoaster queue-inject`` finds the queue.
    """
    path = resolve_program(program, home)
    try:
        message_fd = _open_message(message, offset)
    except OSError as exc:
        # The spool cannot be read back: the queue cannot even be started (qmail_open failed).
        log.warning("qmailqueue QMAILQUEUE %s: cannot open the message: %s", path, exc)
        return QueueOutcome(exitcodes.reply_for(exitcodes.EXEC_ERROR), None)
    child_env = {**env, "QTOASTER_HOME": str(home)}
    try:
        read_end, write_end = os.pipe()  # both close-on-exec; Popen dup2s read_end to fd 1
    except OSError as exc:
        os.close(message_fd)
        log.warning("qmailqueue QMAILQUEUE %s: no pipe: %s", path, exc)
        return QueueOutcome(exitcodes.reply_for(exitcodes.EXEC_ERROR), None)
    try:
        proc = await asyncio.create_subprocess_exec(
            path,
            stdin=message_fd,
            stdout=read_end,
            stderr=None,  # inherited: the program's complaints go to the server's log
            env=child_env,
            cwd=home,
            process_group=0,  # its own group, so a timeout kills what it started too
        )
    except OSError as exc:
        os.close(write_end)
        # qmail's child _exit(120)s when execv fails: the same text here.
        log.warning("qmailqueue QMAILQUEUE %s: cannot exec: %s", path, exc)
        return QueueOutcome(exitcodes.reply_for(exitcodes.EXEC_ERROR), None)
    finally:
        os.close(message_fd)
        os.close(read_end)
    return await _converse(proc, path, write_end, envelope.to_qmail(), timeout)


async def _converse(
    proc: asyncio.subprocess.Process, path: str, write_end: int, data: bytes, timeout: float
) -> QueueOutcome:
    """Write the envelope, wait for the exit, map it; kill the group on timeout or cancel."""
    written = False
    try:
        async with asyncio.timeout(timeout):
            written = await _write_all(write_end, data)
            os.close(write_end)
            write_end = -1
            code = await proc.wait()
    except TimeoutError:
        log.warning(
            "qmailqueue QMAILQUEUE %s (pid %d): timed out after %gs", path, proc.pid, timeout
        )
        await _kill(proc)
        return QueueOutcome(exitcodes.reply_for(exitcodes.TIMEOUT), proc.pid)
    except BaseException:  # cancelled (connection lost, shutdown): nothing was acknowledged
        await asyncio.shield(_kill(proc))
        raise
    finally:
        if write_end >= 0:
            os.close(write_end)
    if code == exitcodes.OK and written:
        return QueueOutcome(None, proc.pid)
    if code == exitcodes.OK:
        # qmail_close: exit 0 after a failed write falls through to "qq read error".
        code = exitcodes.READ_ERROR
    if code < 0:
        log.warning("qmailqueue QMAILQUEUE %s (pid %d): killed by signal %d", path, proc.pid, -code)
    return QueueOutcome(exitcodes.reply_for(code), proc.pid)


def _open_message(message: MessageSource, offset: int) -> int:
    """A new read-only descriptor on the message file at ``offset`` (own file position)."""
    if isinstance(message, (str, os.PathLike)):
        fd = os.open(message, os.O_RDONLY | os.O_CLOEXEC)
    else:
        message.flush()
        # A dup would share the writer's file position and its write-only mode; reopening
        # through /proc gives an independent read-only description of the same inode.
        fd = os.open(f"/proc/self/fd/{message.fileno()}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.lseek(fd, offset, os.SEEK_SET)
    except OSError:
        os.close(fd)
        raise
    return fd


async def _write_all(fd: int, data: bytes) -> bool:
    """Write ``data`` to a pipe without blocking the loop; False if the reader went away."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            ready = loop.create_future()
            loop.add_writer(fd, ready.set_result, None)
            try:
                await ready
            finally:
                loop.remove_writer(fd)
        except OSError:  # EPIPE: the program exited (or closed fd 1) without reading it all
            return False
    return True


async def _kill(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the child's process group (its own, see process_group=0) and reap it."""
    # Even after the child itself exited, what it started may still hold fd 1.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    await proc.wait()
