"""Making names durable: directory fsync, and group commit of it across threads.

After a rename or link, the new name survives a crash only once its directory is
fsynced.  Many threads committing into one directory at once (smtpd commits, Maildir
deliveries) share those fsyncs: :class:`DirSync` lets one fsync that started after a
caller's rename cover every caller waiting at that moment.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory, so the names created in it so far survive a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DirSync:
    """Group commit of one directory's fsync (a lock and a generation counter)."""

    def __init__(
        self, path: Path, enabled: bool, fsync: Callable[[Path], None] = fsync_dir
    ) -> None:
        self.path = path
        self.enabled = enabled
        self._fsync = fsync
        self.fsyncs = 0  # how many fsyncs ran (tests check the coalescing)
        self._cond = threading.Condition()
        self._started = 0
        self._finished = 0
        self._running = False

    def sync(self) -> None:
        """Return once an fsync of the directory that began after this call has finished."""
        if not self.enabled:
            return
        with self._cond:
            # One already running may have begun before our rename: we need the next one.
            target = self._started + 1
            while self._finished < target:
                if self._running:
                    self._cond.wait()
                    continue
                self._running = True
                self._started += 1
                generation = self._started
                error: OSError | None = None
                self._cond.release()
                try:
                    self._fsync(self.path)
                except OSError as exc:
                    error = exc
                finally:
                    self._cond.acquire()
                self._running = False
                self.fsyncs += 1
                if error is None:
                    self._finished = generation
                self._cond.notify_all()
                if error is not None:
                    raise error


class DirSyncs:
    """One :class:`DirSync` per directory, created on first use (thread-safe)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._lock = threading.Lock()
        self._syncs: dict[str, DirSync] = {}

    def sync(self, path: str) -> None:
        if not self.enabled:
            return
        with self._lock:
            syncer = self._syncs.get(path)
            if syncer is None:
                syncer = self._syncs[path] = DirSync(Path(path), True)
        syncer.sync()
