"""Pausing deliveries for a backup: the request (``run/send.pause``) and the answer
(``queue/paused``), docs/backup.md "Consistency".

The protocol:
1. the requester (``qtoaster backup``, root) creates ``run/send.pause``, holds an exclusive
   flock on it for as long as it wants deliveries paused, writes a random token into it,
   and writes ``^`` to the trigger FIFO;
2. the queue manager, woken, sees a live request (:meth:`PauseWatch.requested`), launches
   no delivery any more, lets those in flight finish, then writes the token into
   ``queue/paused`` (:meth:`PauseWatch.acknowledge`): from then on until the request ends,
   no Maildir and no queue file is changed by a delivery;
3. the requester ends the request by closing its descriptor (the flock drops) and removing
   the file; a requester that dies (kill -9 included) drops the flock too, so a stale file
   never keeps deliveries paused: the manager re-checks every :data:`RECHECK` seconds
   while paused.

Invariants: only root can create the request (``run/`` is root's), so a role that can
write the trigger FIFO can still only wake the manager; a request is live only while its
flock is held; the answer names the token it answers, so an old ``queue/paused`` never
answers a new request.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
from pathlib import Path

log = logging.getLogger("qtoaster.send")

REQUEST = "send.pause"  # in run/
ANSWER = "paused"  # in queue/
WORD = "^"  # the trigger word: the pause request changed
RECHECK = 1.0  # seconds between checks while paused


def request_path(run_dir: Path) -> Path:
    return run_dir / REQUEST


def answer_path(queue_dir: Path) -> Path:
    return queue_dir / ANSWER


def live_token(request: Path) -> str | None:
    """The token of a live request (its writer holds the flock), else None."""
    try:
        fd = os.open(request, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.read(fd, 256).decode("ascii", "replace").strip() or "-"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None  # stale: whoever wrote it is gone
    finally:
        os.close(fd)


class PauseWatch:
    """The queue manager's side: is a pause requested, and say when it is honoured."""

    def __init__(self, run_dir: Path, queue_dir: Path) -> None:
        self.request = request_path(run_dir)
        self.answer = answer_path(queue_dir)
        self.answered: str | None = None  # the token written into the answer
        self._warned = False

    def requested(self) -> str | None:
        """The live request's token; an unreadable request is said once and ignored (a
        pause must never stop the queue manager)."""
        try:
            token = live_token(self.request)
        except OSError as exc:
            if not self._warned:
                log.warning("send warning: unable to read the pause request: %s", exc)
                self._warned = True
            return None
        self._warned = False
        return token

    def acknowledge(self, token: str) -> bool:
        """Write the answer for ``token`` (once per token); True if written now."""
        if self.answered == token:
            return False
        tmp = self.answer.with_name(self.answer.name + ".tmp")
        tmp.write_text(token + "\n")
        os.replace(tmp, self.answer)
        self.answered = token
        return True

    def resume(self) -> None:
        """The request is over: forget the answer."""
        self.answered = None
        with contextlib.suppress(FileNotFoundError):
            self.answer.unlink()


class PauseRequest:
    """The requester's side: hold the request until :meth:`release`."""

    def __init__(self, run_dir: Path, queue_dir: Path) -> None:
        self.request = request_path(run_dir)
        self.answer = answer_path(queue_dir)
        self.token = secrets.token_hex(16)
        self._fd: int | None = None

    def hold(self) -> None:
        self.request.parent.mkdir(mode=0o750, exist_ok=True)
        # 0644 as the other files of run/: the queue manager runs as its own user.
        fd = os.open(self.request, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RuntimeError(f"another backup holds {self.request}") from None
        os.fchmod(fd, 0o644)  # whatever the umask
        os.ftruncate(fd, 0)
        os.write(fd, f"{self.token}\n".encode())
        self._fd = fd

    def honoured(self) -> bool:
        """The queue manager answered this request: nothing is being delivered."""
        try:
            return self.answer.read_text().strip() == self.token
        except OSError:
            return False

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.request.unlink()
        os.close(self._fd)  # the flock drops with the last descriptor
        self._fd = None
