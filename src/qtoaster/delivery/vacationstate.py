"""Who a user's vacation autoresponder answered, and when: one small file per user.

``domains/DOMAIN/USER/vacation.seen``, beside the Maildir (not in it: IMAP and POP3 never
see it) and beside the user's ``.qmail`` file; qmail-autoresponder kept the same memory
as one file per sender.  One line per sender, ``<unix seconds> <sender>``, the sender
lower-cased.  Written by local delivery only (the mailbox owner).

Invariants:
- bounded: a write keeps only the senders answered within the period, at most
  :data:`MAX_SENDERS` of them (the most recent);
- one writer at a time: :func:`opened` holds an exclusive ``flock`` on the file for the
  whole decide-reply-record step, so two deliveries to one user from one sender at once
  give one reply;
- the file is rewritten in place; a crash in the middle can leave a torn line, which a
  read skips: the worst case is one reply too many, never a lost message.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

STATE_FILE = "vacation.seen"
MAX_SENDERS = 10_000
_READ_MAX = 4 << 20


class SenderLog:
    """The open, locked file (use :func:`opened`)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._seen: dict[str, float] = {}
        data = os.pread(fd, _READ_MAX, 0)
        for line in data.decode("utf-8", "replace").splitlines():
            when, _, sender = line.partition(" ")
            try:
                self._seen[sender] = max(float(when), self._seen.get(sender, 0.0))
            except ValueError:
                continue  # a torn line (docstring)

    def last(self, sender: str) -> float | None:
        """When ``sender`` was last answered, or None."""
        return self._seen.get(sender.lower())

    def record(self, sender: str, now: float, period: int) -> None:
        """Remember that ``sender`` was answered at ``now``; forget the expired."""
        self._seen[sender.lower()] = now
        recent = sorted(
            ((when, who) for who, when in self._seen.items() if now - when < period),
            reverse=True,
        )[:MAX_SENDERS]
        text = "".join(f"{int(when)} {who}\n" for when, who in sorted(recent))
        data = text.encode("utf-8", "surrogateescape")
        os.pwrite(self._fd, data, 0)
        os.ftruncate(self._fd, len(data))


@contextmanager
def opened(user_dir: Path) -> Iterator[SenderLog]:
    """The user's sender log, created if missing (0600), locked until the block ends."""
    fd = os.open(user_dir / STATE_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield SenderLog(fd)
    finally:
        os.close(fd)
