"""The mailbox broker's second door: imapd's file requests over ``run/mailbox/imap.sock``.

Runs inside ``qtoaster serve mailbox`` (mailboxd/server.py starts it), as the mailbox
owner; imapd runs as a user that cannot enter a Maildir (docs/security.md). Speaks
broker.fsproto (docs/imap-broker.md): one connection is one IMAP session. Its first
request is ``open`` with the ticket the auth role gave imapd at that user's login; the
ticket is redeemed at the auth role for the Maildir, and every later request is one file
operation executed by :class:`qtoaster.maildir.confined.ConfinedFs` inside that Maildir
(descriptors go back with SCM_RIGHTS). ``watch`` waits with maildir.watch (inotify) and
is answered on a change, at its timeout, or (``changed`` false) when the next request
arrives.

Invariants:
- asyncio, one task per connection: 10,000 idle IMAP sessions hold 10,000 sockets and
  tasks, no thread; file work runs in a bounded pool (:data:`THREADS`), never on the loop;
- started as root (``peers`` with an imapd uid), only imapd's uid (SO_PEERCRED) is served;
  anyone else gets ``denied`` and is disconnected. Not started as root, every role is one
  uid and everyone is served;
- no file is touched before the ticket was redeemed, a connection serves only the Maildir
  its ticket named, one ``open`` per connection;
- answers go out in request order; a pending watch is answered before the next request's
  answer; answers carry the id of their request;
- nothing a client sends raises out of its task: a bad line gets ``bad`` and the
  connection is closed, a line over MAX_REQUEST too; an unexpected error is ``temp``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from qtoaster.auth.client import redeem
from qtoaster.auth.protocol import ProtocolError as AuthProtocolError
from qtoaster.auth.protocol import socket_path as auth_socket_path
from qtoaster.broker.fsproto import (
    MAX_REQUEST,
    FsAnswer,
    FsRequest,
    ProtocolError,
    decode_request,
    encode_answer,
    socket_path,
)
from qtoaster.core.home import Home
from qtoaster.maildir.confined import ConfinedFs, errno_name
from qtoaster.maildir.storeapi import StoreError
from qtoaster.maildir.watch import InotifyWatcher

log = logging.getLogger("qtoaster.mailbox.imap")
SOCKET_MODE = 0o660
THREADS = 16
# A connection that sends nothing (no watch pending) for this long is closed: imapd logs
# an idle session out after 30 minutes (RFC 9051 5.4) and IDLE re-arms its watch.
IDLE_SECONDS = 3600.0
_RECV = 256 * 1024


def _peer_uid(sock: socket.socket) -> int | None:
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    return int(struct.unpack("3i", raw)[1])


class FsSession:
    """One imapd connection: its Maildir (after ``open``) and its pending watch."""

    def __init__(self, server: FsServer, sock: socket.socket, allowed: bool) -> None:
        self.server = server
        self.sock = sock
        self.allowed = allowed
        self.buffer = bytearray()
        self.fs: ConfinedFs | None = None
        self.watcher: InotifyWatcher | None = None
        self.opened = False

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        reading: asyncio.Task[bytes | None] | None = None
        watch: tuple[int, asyncio.Task[bool]] | None = None
        try:
            while True:
                if reading is None:
                    reading = loop.create_task(self._readline(watch is None))
                if watch is not None:
                    await asyncio.wait({reading, watch[1]}, return_when=asyncio.FIRST_COMPLETED)
                    if not reading.done():
                        self.server.watching -= 1
                        await self._send(FsAnswer(watch[0], True, changed=_changed(watch[1])))
                        watch = None
                        continue
                line = await reading
                reading = None
                if watch is not None:
                    changed = watch[1].done() and _changed(watch[1])
                    watch[1].cancel()
                    self.server.watching -= 1
                    await self._send(FsAnswer(watch[0], True, changed=changed))
                    watch = None
                if line is None:
                    break
                request = await self._one(line)
                if request is None:
                    break
                if request.op == "watch" and self.watcher is not None:
                    wait = self.watcher.wait(list(request.dirs), request.timeout)
                    watch = (request.id, loop.create_task(wait))
                    self.server.watching += 1
        except OSError as exc:
            log.debug("mailboxd imap connection: %s", exc)
        finally:
            if watch is not None:
                watch[1].cancel()
                self.server.watching -= 1
            if reading is not None:
                reading.cancel()
            self.sock.close()

    async def _readline(self, idle_limit: bool) -> bytes | None:
        """The next line; None at end of input, or after an idle hour without a watch."""
        loop = asyncio.get_running_loop()
        start = 0
        while True:
            end = self.buffer.find(b"\n", start)
            if end >= 0:
                line = bytes(self.buffer[: end + 1])
                del self.buffer[: end + 1]
                return line
            if len(self.buffer) > MAX_REQUEST:
                return bytes(self.buffer)  # refused as too long: decode_request says so
            start = len(self.buffer)
            try:
                async with asyncio.timeout(IDLE_SECONDS if idle_limit else None):
                    data = await loop.sock_recv(self.sock, _RECV)
            except TimeoutError:
                return None
            if not data:
                return None
            self.buffer += data

    async def _send(self, answer: FsAnswer, fds: list[int] | None = None) -> None:
        loop = asyncio.get_running_loop()
        data = encode_answer(answer)
        if fds:
            while True:
                try:
                    sent = socket.send_fds(self.sock, [data], fds)
                    break
                except BlockingIOError:
                    writable: asyncio.Future[None] = loop.create_future()
                    loop.add_writer(self.sock, writable.set_result, None)
                    try:
                        await writable
                    finally:
                        loop.remove_writer(self.sock)
            data = data[sent:]
        if data:
            await loop.sock_sendall(self.sock, data)

    async def _one(self, line: bytes) -> FsRequest | None:
        """Answer one line (a watch is answered later); None: close the connection."""
        try:
            request = decode_request(line)
        except ProtocolError as exc:
            await self._send(FsAnswer(0, False, "bad", f"bad request: {exc}"))
            return None
        if not self.allowed:
            log.warning("mailboxd refused an imap request from uid %s", _peer_uid(self.sock))
            await self._send(FsAnswer(request.id, False, "denied", "not allowed for this peer"))
            return None
        if not self.opened:
            if request.op != "open":
                await self._send(FsAnswer(request.id, False, "bad", "open a Maildir first"))
                return None
            return request if await self._open(request) else None
        if request.op == "open":
            await self._send(FsAnswer(request.id, False, "bad", "one open per connection"))
            return None
        if request.op == "watch":
            return request
        fds: list[int] = []
        try:
            answer, fds = await asyncio.get_running_loop().run_in_executor(
                self.server.executor, self._execute, request
            )
            await self._send(answer, fds)
        finally:
            for fd in fds:
                os.close(fd)
        return request

    async def _open(self, request: FsRequest) -> bool:
        self.opened = True
        loop = asyncio.get_running_loop()
        try:
            ticket = await loop.run_in_executor(
                self.server.executor, redeem, auth_socket_path(self.server.home), request.ticket
            )
        except (OSError, AuthProtocolError) as exc:
            log.warning("mailboxd cannot redeem a ticket: %s", exc)
            await self._send(FsAnswer(request.id, False, "temp", f"auth role unavailable: {exc}"))
            return False
        if not ticket.ok:
            log.warning("mailboxd refused an imap ticket that is unknown, used or expired")
            await self._send(FsAnswer(request.id, False, "ticket", "unknown, used or expired"))
            return False
        if not ticket.maildir:
            await self._send(FsAnswer(request.id, False, "os", "no Maildir", errno="ENOENT"))
            return False
        self.fs = ConfinedFs(ticket.maildir, self.server.hostname)
        self.watcher = InotifyWatcher(Path(ticket.maildir))
        await self._send(FsAnswer(request.id, True, maildir=ticket.maildir))
        return True

    def _execute(self, request: FsRequest) -> tuple[FsAnswer, list[int]]:
        """One file operation (in the pool): its answer and the descriptors to send."""
        fs = self.fs
        assert fs is not None
        ident = request.id
        try:
            return _dispatch(fs, request)
        except StoreError as exc:
            return FsAnswer(ident, False, "store", exc.text, code=exc.code), []
        except OSError as exc:
            return FsAnswer(ident, False, "os", exc.strerror or str(exc), errno_name(exc)), []
        except Exception as exc:  # a bug must not end the broker: the session answers SERVERBUG
            log.exception("mailboxd imap request %s failed", request.op)
            return FsAnswer(ident, False, "temp", f"{type(exc).__name__}: {exc}"), []


def _changed(task: asyncio.Task[bool]) -> bool:
    if task.cancelled() or task.exception() is not None:
        return False
    return task.result()


def _dispatch(fs: ConfinedFs, request: FsRequest) -> tuple[FsAnswer, list[int]]:
    ident, op = request.id, request.op
    ok = FsAnswer(ident, True)
    if op == "listdir":
        return FsAnswer(ident, True, names=tuple(fs.listdir(request.path))), []
    if op == "stat":
        size, mtime = fs.stat(request.path)
        return FsAnswer(ident, True, size=size, mtime=mtime), []
    if op == "stat_many":
        return FsAnswer(ident, True, stats=tuple(_stat_or_none(fs, p) for p in request.paths)), []
    if op in ("open_read", "lock"):
        opener = fs.open_read if op == "open_read" else fs.lock
        return ok, [opener(request.path)]
    if op in ("open_many", "open_probe"):
        # the probe first: a change it misses is one the files opened after it may show
        stats = tuple(_stat_or_none(fs, p) for p in request.probe)
        found = fs.open_many(request.paths)
        present = tuple(fd is not None for fd in found)
        fds = [fd for fd in found if fd is not None]
        return FsAnswer(ident, True, present=present, stats=stats), fds
    if op == "read_file":
        data = fs.read_file(request.path, request.limit)
        return FsAnswer(ident, True, data=data or b"", missing=data is None), []
    if op == "write_atomic":
        fs.write_atomic(request.path, request.data)
    elif op == "append_file":
        fs.append_file(request.path, request.data)
    elif op == "rename_many":
        return FsAnswer(ident, True, results=tuple(fs.rename_many(request.pairs))), []
    elif op == "unlink_many":
        return FsAnswer(ident, True, results=tuple(fs.unlink_many(request.paths))), []
    elif op == "mkdir":
        fs.mkdir(request.path)
    elif op == "remove_folder":
        fs.remove_folder(request.path)
    elif op == "rename_folder":
        fs.rename_folder(request.path, request.new)
    elif op == "deliver":
        name = fs.deliver(request.folder, request.data, request.info, request.mtime)
        return FsAnswer(ident, True, name=name), []
    elif op == "link_copy":
        return FsAnswer(
            ident, True, name=fs.link_copy(request.path, request.folder, request.info)
        ), []
    elif op == "quota":
        usage = fs.quota()
        quota = (usage.storage_used, usage.storage_limit, usage.messages_used, usage.messages_limit)
        return FsAnswer(ident, True, quota=quota), []
    return ok, []


def _stat_or_none(fs: ConfinedFs, rel: str) -> tuple[int, float] | None:
    try:
        return fs.stat(rel)
    except FileNotFoundError:
        return None


class FsServer:
    """The listener on imap.sock, its event loop (in a thread of the broker) and pool."""

    def __init__(self, home: Home, hostname: str, imapd: int | None, root: bool) -> None:
        self.home = home
        self.hostname = hostname
        self.imapd = imapd
        self.root = root  # started as root: only imapd's uid is served
        self.executor = ThreadPoolExecutor(THREADS, thread_name_prefix="mailbox-imap")
        self.sessions: set[asyncio.Task[None]] = set()
        self.watching = 0  # watches pending (IDLE sessions), changed on the loop only
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._listener: socket.socket | None = None

    def allowed(self, uid: int | None) -> bool:
        return not self.root or (uid is not None and uid == self.imapd)

    def listen(self) -> str:
        path = socket_path(self.home)
        path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(os.fspath(path))
        os.chmod(path, SOCKET_MODE)
        listener.listen(1024)
        listener.setblocking(False)
        self._listener = listener
        return os.fspath(path)

    async def serve(self) -> None:
        """Accept until :meth:`close`; the listener must be listening."""
        loop = asyncio.get_running_loop()
        self._loop, self._stop = loop, asyncio.Event()
        listener = self._listener
        assert listener is not None
        accepting = loop.create_task(self._accept(listener))
        await self._stop.wait()
        accepting.cancel()
        for task in [*self.sessions]:
            task.cancel()
        await asyncio.gather(accepting, *self.sessions, return_exceptions=True)
        listener.close()

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, _addr = await loop.sock_accept(listener)
            except OSError as exc:  # EMFILE and the like: wait for sessions to end
                log.error("mailboxd imap.sock accept failed: %s", exc)
                await asyncio.sleep(0.5)
                continue
            sock.setblocking(False)
            session = FsSession(self, sock, self.allowed(_peer_uid(sock)))
            task = loop.create_task(session.serve())
            self.sessions.add(task)
            task.add_done_callback(self.sessions.discard)

    def start(self) -> str:
        """Listen and serve in a thread of its own (the broker's POP3 side is threads)."""
        path = self.listen()
        ready = threading.Event()

        async def main() -> None:
            serving = asyncio.get_running_loop().create_task(self.serve())
            await asyncio.sleep(0)
            ready.set()
            await serving

        self._thread = threading.Thread(target=asyncio.run, args=(main(),), name="mailbox-imap")
        self._thread.daemon = True
        self._thread.start()
        ready.wait(10)
        return path

    def close(self) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(10)
        self.executor.shutdown(wait=False, cancel_futures=True)
