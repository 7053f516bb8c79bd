"""Process locks on a home: one supervisor per home, one queue manager per queue.

A lock is ``flock(LOCK_EX | LOCK_NB)`` on a file under ``home/run/``, held through an
open descriptor for the life of the process.  Invariants: the kernel drops it when the
process ends however it ends (kill -9 included), so a crash never leaves a stale lock; the
file's content (the holder's pid) is only for the message, never trusted for the lock
itself; the descriptor is not inheritable, so children never keep it alive.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from qtoaster.core.errors import QtoasterError

SUPERVISOR = "qtoaster.lock"  # held by `qtoaster run`
QUEUE_MANAGER = "send.lock"  # held by `qtoaster serve send`


class Locked(QtoasterError):
    """Another process holds the lock; ``str()`` names the home and its pid."""

    def __init__(self, message: str, pid: int | None) -> None:
        super().__init__(message)
        self.pid = pid


class HomeLock:
    """An exclusive lock on ``run_dir / name``, taken by :meth:`acquire`."""

    def __init__(self, run_dir: Path, name: str) -> None:
        self.path = run_dir / name
        self.fd: int | None = None

    def holder(self) -> int | None:
        """The pid written by the holder (None if unknown); informative only."""
        try:
            text = self.path.read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def acquire(self, what: str) -> None:
        """Take the lock or raise `Locked` naming *what* runs, the home and the holder's pid."""
        self.path.parent.mkdir(mode=0o755, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = self.holder()
            home = self.path.parent.parent
            by = f" (pid {pid})" if pid is not None else ""
            raise Locked(f"{what} is already running on {home}{by}", pid) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor drops the flock
            self.fd = None

    def held_elsewhere(self) -> int | None:
        """Without keeping it: None if the lock is free now, else the holder's pid (or 0)."""
        try:
            self.acquire("")
        except Locked as exc:
            return exc.pid or 0
        self.release()
        return None
