"""imapd's side of the mailbox broker's file protocol: a MailFs and a Watcher over one
connection to ``run/mailbox/imap.sock`` (broker.fsproto, docs/imap-broker.md).

imapd started as root cannot enter a Maildir (docs/security.md). At login it gets a
ticket from the auth role and calls :meth:`BrokerFs.open`; the broker redeems the ticket
and from then on executes each :class:`~qtoaster.maildir.storeapi.MailFs` operation inside
that user's Maildir, sending files back as descriptors. :class:`BrokerWatcher` (from
:meth:`BrokerFs.watcher`) is IDLE's wait on the same connection.

Invariants:
- :class:`BrokerFs`'s methods block (the session calls them in its threads); one request
  at a time per connection, guarded by ``_lock``: a descriptor received belongs to the
  answer being read, and answers come back in request order;
- :meth:`BrokerWatcher.wait` holds no thread: it sends ``watch`` under the lock (a short,
  non-blocking-in-practice write), releases it, and then reads through a non-blocking
  duplicate of the socket from the event loop, only while it holds the lock (taken
  without blocking). A blocking call made meanwhile takes the lock, sends its request (the
  broker then answers the watch, ``changed`` false, before it), and itself reads the
  watch's answer: it stores it and wakes the waiter (``call_soon_threadsafe``). So at any
  moment exactly one party reads the socket, the one holding the lock;
- a watch that timed out or was cancelled (IDLE's DONE) is remembered as stale: its
  answer, whenever it comes, is dropped by whoever reads it;
- a broker that answers nonsense, closes, or does not answer within the timeout is an
  OSError (the store answers SERVERBUG) and the connection is closed: nothing after it
  can be trusted to belong to the right request;
- broker errors map back: ``os`` to OSError with the errno (FileNotFoundError, ...),
  ``store`` to StoreError(code, text).
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import os
import socket
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from qtoaster.broker.fsproto import (
    MAX_ANSWER,
    MAX_FDS,
    MAX_STATS,
    FsAnswer,
    FsRequest,
    ProtocolError,
    decode_answer,
    encode_request,
    fd_count,
)
from qtoaster.core.errors import TemporaryFailure
from qtoaster.maildir.storeapi import QuotaUsage, StoreError

TIMEOUT = 60.0
# How long past its own timeout a watch's answer may take before the broker is presumed gone.
WATCH_GRACE = 30.0
_RECV = 256 * 1024
_BUSY_PAUSE = 0.01


class BrokerFsError(TemporaryFailure, OSError):
    """The broker refused (``answer``) or could not be asked (``answer`` None)."""

    def __init__(self, text: str, answer: FsAnswer | None = None) -> None:
        super().__init__(text)
        self.answer = answer


class BrokerFs:
    """One IMAP session's Maildir, through the mailbox broker (a MailFs)."""

    def __init__(self, sock: socket.socket, maildir: str) -> None:
        self.maildir = maildir
        self._sock: socket.socket | None = sock
        self._nb = sock.dup()  # same file description: reads from the event loop
        self._nb.setblocking(False)
        self._lock = threading.Lock()
        self._ids = itertools.count(2)
        self._buffer = bytearray()
        self._fds: list[int] = []
        self._watch_id: int | None = None
        self._watch_answer: FsAnswer | None = None
        self._wake: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None
        self._stale: set[int] = set()

    @classmethod
    def open(cls, socket_path: Path, ticket: str, timeout: float = TIMEOUT) -> BrokerFs:
        """Connect and open the ticket's Maildir; BrokerFsError (``answer.error``
        ``ticket``, ``denied``, ``temp``) when the broker refuses."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(os.fspath(socket_path))
        except BaseException:
            sock.close()
            raise
        fs = cls(sock, "")
        try:
            answer, _fds = fs._ask(FsRequest(1, "open", ticket=ticket))
            fs.maildir = answer.maildir
        except BaseException:
            fs.close()
            raise
        return fs

    def watcher(self) -> BrokerWatcher:
        return BrokerWatcher(self)

    def close(self) -> None:
        """Close the connection (the broker forgets the session); again does nothing."""
        sock, self._sock = self._sock, None
        if sock is not None:
            self._nb.close()
            sock.close()
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()

    # --- the connection -----------------------------------------------------------------

    def _fail(self, text: str, exc: BaseException | None = None) -> BrokerFsError:
        self.close()
        error = BrokerFsError(f"mailbox broker: {text}")
        error.__cause__ = exc
        return error

    def _receive(self, blocking: bool) -> bool:
        """Read what is there into the buffer (waiting when ``blocking``); False when
        nothing was (non-blocking). Raises BrokerFsError at end of input."""
        sock = self._sock if blocking else self._nb
        if sock is None:
            raise BrokerFsError("mailbox broker connection closed")
        try:
            data, fds, _flags, _addr = socket.recv_fds(sock, _RECV, MAX_FDS)
        except BlockingIOError:
            return False
        except OSError as exc:
            raise self._fail(str(exc), exc) from exc
        self._fds += fds
        if not data:
            raise self._fail("closed the connection")
        self._buffer += data
        if len(self._buffer) > MAX_ANSWER and b"\n" not in self._buffer:
            raise self._fail("answer too long")
        return True

    def _line(self) -> FsAnswer | None:
        """The next complete answer in the buffer, if any."""
        end = self._buffer.find(b"\n")
        if end < 0:
            return None
        line = bytes(self._buffer[: end + 1])
        del self._buffer[: end + 1]
        try:
            return decode_answer(line)
        except ProtocolError as exc:
            raise self._fail(str(exc), exc) from exc

    def _other(self, answer: FsAnswer) -> None:
        """An answer that is not the current request's: the watch's, or a stale one."""
        if answer.id == self._watch_id:
            self._watch_answer = answer
            wake = self._wake
            if wake is not None:
                loop, future = wake
                loop.call_soon_threadsafe(_set, future)
        elif answer.id in self._stale:
            self._stale.discard(answer.id)
        else:
            raise self._fail(f"answer {answer.id} to no request ({answer.error} {answer.text})")

    def _ask(self, request: FsRequest) -> tuple[FsAnswer, list[int]]:
        """Send ``request``, read until its answer: (answer, its descriptors)."""
        with self._lock:
            sock = self._sock
            if sock is None:
                raise BrokerFsError("mailbox broker connection closed")
            try:
                sock.sendall(encode_request(request))
            except OSError as exc:
                raise self._fail(str(exc), exc) from exc
            while True:
                answer = self._line()
                if answer is None:
                    self._receive(blocking=True)
                    continue
                if answer.id == request.id:
                    break
                if answer.id == 0:  # the broker answered a line it could not read
                    self.close()
                    raise BrokerFsError(answer.text or answer.error, answer)
                self._other(answer)
            wanted = fd_count(request.op, answer)
            if len(self._fds) < wanted:
                raise self._fail(f"{wanted} descriptors announced, {len(self._fds)} came")
            fds, rest = self._fds[:wanted], self._fds[wanted:]
            self._fds = []
            for fd in rest:
                os.close(fd)
        if not answer.ok:
            raise _error(answer)
        return answer, fds

    def _call(self, op: str, **fields: Any) -> FsAnswer:
        answer, fds = self._ask(FsRequest(next(self._ids), op, **fields))
        for fd in fds:
            os.close(fd)
        return answer

    # --- MailFs ---------------------------------------------------------------------------

    def listdir(self, rel: str) -> list[str]:
        return list(self._call("listdir", path=rel).names)

    def stat(self, rel: str) -> tuple[int, float]:
        answer = self._call("stat", path=rel)
        return answer.size, answer.mtime

    def stat_many(self, rels: Sequence[str]) -> list[tuple[int, float] | None]:
        """(size, mtime) of each path, None for a missing one: one round trip (beyond
        MailFs: the selected folder's "changed?" probe, maildir/view.py)."""
        found: list[tuple[int, float] | None] = []
        for start in range(0, len(rels), MAX_STATS):
            chunk = tuple(rels[start : start + MAX_STATS])
            stats = self._call("stat_many", paths=chunk).stats
            if len(stats) != len(chunk):
                raise self._fail("stat_many: answer does not match the request")
            found += stats
        return found

    def open_read(self, rel: str) -> BinaryIO:
        _answer, fds = self._ask(FsRequest(next(self._ids), "open_read", path=rel))
        return os.fdopen(fds[0], "rb")

    def open_many(self, rels: Sequence[str]) -> list[BinaryIO | None]:
        files: list[BinaryIO | None] = []
        try:
            for start in range(0, len(rels), MAX_FDS):
                chunk = tuple(rels[start : start + MAX_FDS])
                answer, fds = self._ask(FsRequest(next(self._ids), "open_many", paths=chunk))
                if len(answer.present) != len(chunk):
                    for fd in fds:
                        os.close(fd)
                    raise self._fail("open_many: answer does not match the request")
                given = iter(fds)
                files += [os.fdopen(next(given), "rb") if p else None for p in answer.present]
        except BaseException:
            for stream in files:
                if stream is not None:
                    stream.close()
            raise
        return files

    def open_probe(
        self, rels: Sequence[str], probe: Sequence[str]
    ) -> tuple[list[BinaryIO | None], list[tuple[int, float] | None]]:
        """open_many of ``rels`` (at most MAX_FDS) and stat_many of ``probe`` (at most
        MAX_STATS) in one round trip (beyond MailFs: a FETCH's opens carry the selected
        folder's "changed?" probe, maildir/view.py)."""
        if len(rels) > MAX_FDS or len(probe) > MAX_STATS:
            raise ValueError("open_probe: too many paths")
        request = FsRequest(next(self._ids), "open_probe", paths=tuple(rels), probe=tuple(probe))
        answer, fds = self._ask(request)
        if len(answer.present) != len(rels) or len(answer.stats) != len(probe):
            for fd in fds:
                os.close(fd)
            raise self._fail("open_probe: answer does not match the request")
        given = iter(fds)
        files: list[BinaryIO | None] = [
            os.fdopen(next(given), "rb") if p else None for p in answer.present
        ]
        return files, list(answer.stats)

    def read_file(self, rel: str, limit: int) -> bytes | None:
        answer = self._call("read_file", path=rel, limit=limit)
        return None if answer.missing else answer.data

    def write_atomic(self, rel: str, data: bytes) -> None:
        self._call("write_atomic", path=rel, data=data)

    def append_file(self, rel: str, data: bytes) -> None:
        self._call("append_file", path=rel, data=data)

    def rename_many(self, pairs: Sequence[tuple[str, str]]) -> list[str | None]:
        return list(self._call("rename_many", pairs=tuple(pairs)).results)

    def unlink_many(self, rels: Sequence[str]) -> list[str | None]:
        return list(self._call("unlink_many", paths=tuple(rels)).results)

    def mkdir(self, rel: str) -> None:
        self._call("mkdir", path=rel)

    def remove_folder(self, rel: str) -> None:
        self._call("remove_folder", path=rel)

    def rename_folder(self, old: str, new: str) -> None:
        self._call("rename_folder", path=old, new=new)

    def deliver(self, folder: str, data: bytes, info: str, mtime: float | None) -> str:
        return self._call("deliver", folder=folder, data=data, info=info, mtime=mtime).name

    def link_copy(self, src: str, folder: str, info: str) -> str:
        return self._call("link_copy", path=src, folder=folder, info=info).name

    def lock(self, rel: str) -> int:
        _answer, fds = self._ask(FsRequest(next(self._ids), "lock", path=rel))
        return fds[0]

    def quota(self) -> QuotaUsage:
        found = self._call("quota").quota
        if found is None:
            raise self._fail("quota: no quota in the answer")
        return QuotaUsage(*found)


def _set(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _error(answer: FsAnswer) -> Exception:
    if answer.error == "os":
        number = getattr(errno, answer.errno, errno.EIO)
        return OSError(number, answer.text or os.strerror(number))  # FileNotFoundError...
    if answer.error == "store":
        return StoreError(answer.code or "SERVERBUG", answer.text)
    return BrokerFsError(answer.text or answer.error, answer)


class BrokerWatcher:
    """IDLE's Watcher over a :class:`BrokerFs`'s connection (see the module invariants)."""

    def __init__(self, fs: BrokerFs) -> None:
        self.fs = fs

    async def wait(self, dirs: list[str], timeout: float) -> bool:
        """True on a change in one of ``dirs``, False at ``timeout``; OSError when the
        broker cannot be asked."""
        fs = self.fs
        loop = asyncio.get_running_loop()
        while not fs._lock.acquire(blocking=False):  # a blocking call is in flight
            await asyncio.sleep(_BUSY_PAUSE)
        try:
            sock = fs._sock
            if sock is None:
                raise BrokerFsError("mailbox broker connection closed")
            ident = next(fs._ids)
            fs._watch_id, fs._watch_answer = ident, None
            future: asyncio.Future[None] = loop.create_future()
            fs._wake = (loop, future)
            request = FsRequest(ident, "watch", dirs=tuple(dirs), timeout=timeout)
            try:
                sock.sendall(encode_request(request))
            except OSError as exc:
                raise fs._fail(str(exc), exc) from exc
        finally:
            fs._lock.release()
        try:
            async with asyncio.timeout(timeout + WATCH_GRACE):
                answer = await self._answer(loop)
        except BaseException:  # timed out or cancelled (DONE): its answer is stale
            fs._stale.add(ident)
            raise
        finally:
            fs._wake = None
            fs._watch_id = None
        if not answer.ok:
            raise _error(answer)
        return answer.changed

    async def _answer(self, loop: asyncio.AbstractEventLoop) -> FsAnswer:
        fs = self.fs
        while True:
            if fs._watch_answer is not None:
                return fs._watch_answer
            wake = fs._wake
            assert wake is not None
            if wake[1].done():
                fs._wake = wake = (loop, loop.create_future())
            if fs._lock.acquire(blocking=False):
                try:
                    self._drain()
                finally:
                    fs._lock.release()
                if fs._watch_answer is not None:
                    continue
                fd = fs._nb.fileno()
                loop.add_reader(fd, _set, wake[1])
                try:
                    await wake[1]
                finally:
                    loop.remove_reader(fd)
            else:  # a blocking call reads: it will store our answer and wake us
                try:
                    async with asyncio.timeout(_BUSY_PAUSE * 10):
                        await wake[1]
                except TimeoutError:
                    pass

    def _drain(self) -> None:
        """Read what has come (lock held): answers other than the watch's are stale."""
        fs = self.fs
        while True:
            answer = fs._line()
            if answer is None:
                if not fs._receive(blocking=False):
                    return
                continue
            if answer.id == fs._watch_id or answer.id in fs._stale:
                fs._other(answer)
            else:
                raise fs._fail(f"answer {answer.id} while only a watch was pending")
            if fs._watch_answer is not None:
                return

    def close(self) -> None:
        """The connection is the BrokerFs's: closing it ends the session."""
