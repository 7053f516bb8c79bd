"""IDLE's wait for a change in a Maildir: inotify, one descriptor per process.

:class:`InotifyWatcher` implements the Watcher protocol (docs/imap-broker.md): ``await
wait(dirs, timeout)`` is True as soon as an entry is created, removed, renamed or has its
attributes changed in one of ``dirs`` (relative to the Maildir, e.g. ``new``, ``cur``,
``.Sent/cur``), False at the timeout. The mailbox broker uses it for imapd's ``watch``
requests; a server not started as root uses it in imapd itself.

Invariants:
- one inotify descriptor per process and event loop (:class:`_Hub`, read with
  ``loop.add_reader``), whatever the number of waiters: 10,000 IDLE sessions are 10,000
  futures, not 10,000 descriptors or threads;
- one inotify watch per directory (by device and inode), shared by every waiter on it,
  removed when its last waiter leaves (a cancelled or finished wait always leaves);
- IN_Q_OVERFLOW (events lost) wakes every waiter: a spurious wake costs a rescan, a
  missed one a stale IDLE;
- when the kernel refuses another watch (ENOSPC: fs.inotify.max_user_watches, read from
  /proc/sys/fs/inotify/max_user_watches for the log), that directory is polled every
  :data:`POLL_SECONDS` instead (its mtime and ctime), and this is logged once;
- directories are opened through maildir.confine (no link followed) and watched through
  ``/proc/self/fd``, so a watch never lands outside the Maildir;
- a directory that does not exist is not waited for (the wait runs to its timeout if none
  exists).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
from pathlib import Path

from inotify_simple import INotify
from inotify_simple import flags as in_flags

from qtoaster.maildir.confine import open_dir, open_root

log = logging.getLogger("qtoaster.maildir.watch")
POLL_SECONDS = 3.0
MASK = (
    in_flags.CREATE
    | in_flags.DELETE
    | in_flags.MOVED_FROM
    | in_flags.MOVED_TO
    | in_flags.ATTRIB
    | in_flags.ONLYDIR
)
_LIMIT_FILE = Path("/proc/sys/fs/inotify/max_user_watches")


def max_user_watches() -> int | None:
    """The kernel's limit on inotify watches per user, None when it cannot be read."""
    try:
        return int(_LIMIT_FILE.read_text().strip())
    except (OSError, ValueError):
        return None


class _Watch:
    """One watched directory: its inotify wd, or the descriptor it is polled through."""

    __slots__ = ("fd", "key", "stamp", "waiters", "wd")

    def __init__(self, key: tuple[int, int], wd: int | None, fd: int | None) -> None:
        self.key = key
        self.wd = wd
        self.fd = fd  # polled (no inotify watch left): a descriptor of the directory
        self.stamp = _stamp(fd) if fd is not None else (0, 0)
        self.waiters: set[asyncio.Future[bool]] = set()

    def wake(self) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(True)


def _stamp(fd: int) -> tuple[int, int]:
    info = os.fstat(fd)
    return info.st_mtime_ns, info.st_ctime_ns


class _Hub:
    """The process's inotify descriptor on one event loop, and every watch on it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.inotify = INotify(nonblocking=True)
        self.by_key: dict[tuple[int, int], _Watch] = {}
        self.by_wd: dict[int, _Watch] = {}
        self.polled: dict[tuple[int, int], _Watch] = {}
        self.warned = False
        self._poller: asyncio.TimerHandle | None = None
        loop.add_reader(self.inotify.fileno(), self._readable)

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, ValueError, OSError):
            if not self.loop.is_closed():
                self.loop.remove_reader(self.inotify.fileno())
        self.inotify.close()
        for watch in self.polled.values():
            if watch.fd is not None:
                os.close(watch.fd)
        self.polled.clear()

    def join(self, fd: int, waiter: asyncio.Future[bool]) -> _Watch:
        """The watch of directory ``fd`` (made if new), with ``waiter`` added."""
        info = os.fstat(fd)
        key = (info.st_dev, info.st_ino)
        watch = self.by_key.get(key)
        if watch is None:
            try:
                wd = self.inotify.add_watch(f"/proc/self/fd/{fd}", MASK)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                self._warn()
                watch = _Watch(key, None, os.dup(fd))
                self.polled[key] = watch
                self._schedule()
            else:
                watch = self.by_wd.get(wd) or _Watch(key, wd, None)
                self.by_wd[wd] = watch
            self.by_key[key] = watch
        watch.waiters.add(waiter)
        return watch

    def leave(self, watch: _Watch, waiter: asyncio.Future[bool]) -> None:
        """Remove ``waiter``; the watch goes with its last waiter."""
        watch.waiters.discard(waiter)
        if watch.waiters:
            return
        self._drop(watch)
        if watch.wd is not None:
            with contextlib.suppress(OSError):  # gone already (IN_IGNORED)
                self.inotify.rm_watch(watch.wd)

    def _drop(self, watch: _Watch) -> None:
        if self.by_key.get(watch.key) is watch:
            del self.by_key[watch.key]
        if watch.wd is not None and self.by_wd.get(watch.wd) is watch:
            del self.by_wd[watch.wd]
        if self.polled.get(watch.key) is watch:
            del self.polled[watch.key]
            if watch.fd is not None:
                os.close(watch.fd)
                watch.fd = None

    def _warn(self) -> None:
        if not self.warned:
            self.warned = True
            log.warning(
                "maildir out of inotify watches (fs.inotify.max_user_watches = %s): polling "
                "directories every %g s instead",
                max_user_watches(),
                POLL_SECONDS,
            )

    def _readable(self) -> None:
        try:
            events = self.inotify.read(timeout=0)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EINTR):
                return
            log.error("maildir inotify read failed, waking every waiter: %s", exc)
            events = []
            self._wake_all()
        for event in events:
            if event.mask & in_flags.Q_OVERFLOW:
                self._wake_all()
                continue
            watch = self.by_wd.get(event.wd)
            if watch is None:
                continue
            watch.wake()
            if event.mask & in_flags.IGNORED:  # the directory is gone: so is its watch
                del self.by_wd[event.wd]
                if self.by_key.get(watch.key) is watch:
                    del self.by_key[watch.key]
                watch.wd = None

    def _wake_all(self) -> None:
        for watch in [*self.by_key.values()]:
            watch.wake()

    def _schedule(self) -> None:
        if self._poller is None and self.polled:
            self._poller = self.loop.call_later(POLL_SECONDS, self._poll)

    def _poll(self) -> None:
        self._poller = None
        for watch in [*self.polled.values()]:
            if watch.fd is None:
                continue
            try:
                stamp = _stamp(watch.fd)
            except OSError:
                stamp = (-1, -1)
            if stamp != watch.stamp:
                watch.stamp = stamp
                watch.wake()
        self._schedule()


_hub: _Hub | None = None


def hub() -> _Hub:
    """This process's hub on the running loop (a new one when the loop changed)."""
    global _hub
    loop = asyncio.get_running_loop()
    if _hub is None or _hub.loop is not loop:
        if _hub is not None:
            _hub.close()
        _hub = _Hub(loop)
    return _hub


def watch_count() -> int:
    """Directories watched now (inotify or polled): for tests and the broker's log."""
    return 0 if _hub is None else len(_hub.by_key)


class InotifyWatcher:
    """The Watcher of one Maildir (``root``), in this process."""

    def __init__(self, root: Path) -> None:
        self.root = root

    async def wait(self, dirs: list[str], timeout: float) -> bool:
        """True on a change in one of ``dirs``, False at ``timeout`` seconds."""
        shared = hub()
        waiter: asyncio.Future[bool] = shared.loop.create_future()
        joined: list[_Watch] = []
        try:
            root = open_root(os.fspath(self.root))
            try:
                for rel in dirs:
                    try:
                        fd = open_dir(root, rel)
                    except FileNotFoundError:
                        continue
                    try:
                        joined.append(shared.join(fd, waiter))
                    finally:
                        os.close(fd)
            finally:
                os.close(root)
            try:
                async with asyncio.timeout(timeout):
                    return await waiter
            except TimeoutError:
                return False
        finally:
            for watch in joined:
                shared.leave(watch, waiter)

    def close(self) -> None:
        """Nothing is held between waits: a wait leaves its watches when it ends."""
