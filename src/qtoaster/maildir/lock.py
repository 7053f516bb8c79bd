"""One POP3 session per mailbox (issue 5): an flock held by an open descriptor.

The lock is ``flock(LOCK_EX | LOCK_NB)`` on ``<Maildir>/LOCK_FILE``, held for the session
by an open descriptor.  Invariants:
- acquiring never waits: a second session is refused at once (None);
- flock(2) locks belong to the open file description, so two open()s of the file conflict
  within one process exactly as across processes; a crashed session (even kill -9) releases
  the lock, since the kernel closes a dead process's descriptors;
- where flock is emulated with per-process fcntl locks (NFS on Linux, flock(2) NOTES), one
  process would not conflict with itself: the registry of held (device, inode) pairs
  covers that case;
- the lock file is never unlinked: a session locking an unlinked inode while a newcomer
  creates and locks a fresh file would both think they hold the lock;
- O_CLOEXEC: a program the server runs does not inherit the lock and keep it alive.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from types import TracebackType

LOCK_FILE = "qtoaster-pop3.lock"

_held: set[tuple[int, int]] = set()
_held_guard = threading.Lock()


class MailboxLock:
    """A held mailbox lock; :meth:`release` (or leaving the ``with`` block) frees it."""

    def __init__(self, fd: int, key: tuple[int, int]) -> None:
        self._fd = fd
        self._key = key

    @classmethod
    def acquire(cls, maildir: Path) -> MailboxLock | None:
        """The lock, or None when another session holds it.  OSError when the lock file
        cannot be opened (no Maildir, no permission)."""
        fd = os.open(os.path.join(maildir, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            info = os.fstat(fd)
            key = (info.st_dev, info.st_ino)
            with _held_guard:
                if key not in _held and _try_flock(fd):
                    _held.add(key)
                    return cls(fd, key)
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        return None

    @property
    def held(self) -> bool:
        return self._fd >= 0

    def release(self) -> None:
        """Free the lock; calling it again does nothing."""
        if self._fd < 0:
            return
        with _held_guard:
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = -1
            _held.discard(self._key)

    def __enter__(self) -> MailboxLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def acquire(maildir: Path) -> MailboxLock | None:
    """Module-level spelling of :meth:`MailboxLock.acquire`."""
    return MailboxLock.acquire(maildir)
