"""tls/upgrade.py's TLS layer (one receive buffer per process) with real sockets on loopback.

The cases a shared buffer or a changed start_tls could break: bytes pipelined behind the
client's Finished, two connections read through the one buffer, close_notify, a half
close without close_notify, a client gone mid-handshake, and a large write that must pause
the session's writing and resume it. Each client runs in a thread with blocking sockets
and a timeout; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

from tests.tls.pki import PrivateCA

from qtoaster.tls import upgrade


class Session(asyncio.BufferedProtocol):
    """What a qtoaster session is to the transport: a BufferedProtocol with its own reads."""

    def __init__(self, made: asyncio.Future[Session], context: ssl.SSLContext) -> None:
        self.transport: asyncio.Transport | None = None
        self.made = made
        self.context = context
        self.held: upgrade.Held | None = None
        self.buffer = bytearray(4096)
        self.data = bytearray()
        self.eof = 0
        self.lost: list[Exception | None] = []
        self.paused = 0
        self.resumed = 0
        self.got_data = asyncio.Event()
        self.gone = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        # Implicit TLS, as smtpd and pop3d do it: the ClientHello must reach TLS, not us.
        self.held = upgrade.hold(transport, self, self.context, timeout=5)
        if not self.made.done():
            self.made.set_result(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self.buffer)

    def buffer_updated(self, nbytes: int) -> None:
        self.data += self.buffer[:nbytes]
        self.got_data.set()

    def eof_received(self) -> bool:
        self.eof += 1
        return False

    def pause_writing(self) -> None:
        self.paused += 1

    def resume_writing(self) -> None:
        self.resumed += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)
        self.gone.set()


def contexts(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = PrivateCA()
    _, pem = ca.issue("mx.example.test", dns=["mx.example.test"])
    (tmp_path / "cert.pem").write_bytes(pem)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "cert.pem")
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    return server, client


async def serve(
    tmp_path: Path, client: Callable[[int, ssl.SSLContext], object]
) -> tuple[Session, asyncio.Transport | None, asyncio.Future[object]]:
    """Start ``client(port, context)`` in a thread and upgrade the server side of its
    connection; answers the session, the TLS transport (None: failed) and the client."""
    loop = asyncio.get_running_loop()
    made: asyncio.Future[Session] = loop.create_future()
    server_ctx, client_ctx = contexts(tmp_path)
    server = await loop.create_server(lambda: Session(made, server_ctx), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    done = asyncio.ensure_future(asyncio.to_thread(client, port, client_ctx))
    session = await asyncio.wait_for(made, 10)
    assert session.transport is not None
    assert session.held is not None
    tls = await upgrade.handshake(session.held, who="t")
    server.close()
    return session, tls, done


def _feed(sock: socket.socket, incoming: ssl.MemoryBIO) -> None:
    """One read into the client's MemoryBIO; a closed connection ends the client (a loop
    over an empty read would spin until the test's timeout)."""
    data = sock.recv(65536)
    if not data:
        raise ConnectionError("the server closed the connection")
    incoming.write(data)


def _recv_exactly(sock: ssl.SSLSocket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(min(65536, n - len(data)))
        assert chunk
        data += chunk
    return bytes(data)


async def test_bytes_pipelined_behind_the_finished_reach_the_session(tmp_path: Path) -> None:
    def client(port: int, ctx: ssl.SSLContext) -> bytes:
        # Through MemoryBIOs, so the client's Finished and its first command leave in one
        # send() and arrive in one read at the server.
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(incoming, outgoing)
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                if outgoing.pending:
                    sock.sendall(outgoing.read())
                _feed(sock, incoming)
        obj.write(b"EHLO a\r\nNOOP\r\n")
        sock.sendall(outgoing.read())
        answer = b""
        while not answer:
            _feed(sock, incoming)
            try:
                answer = obj.read(1024)
            except ssl.SSLWantReadError:
                continue
        sock.close()
        return answer

    session, tls, done = await serve(tmp_path, client)
    assert tls is not None
    await asyncio.wait_for(session.got_data.wait(), 10)
    while bytes(session.data) != b"EHLO a\r\nNOOP\r\n":
        await asyncio.wait_for(session.got_data.wait(), 10)
        session.got_data.clear()
    tls.write(b"250 ok\r\n")
    assert await asyncio.wait_for(done, 10) == b"250 ok\r\n"
    await asyncio.wait_for(session.gone.wait(), 10)
    assert len(session.lost) == 1


async def test_two_connections_read_through_the_one_buffer_keep_their_bytes(
    tmp_path: Path,
) -> None:
    def client(tag: bytes) -> Callable[[int, ssl.SSLContext], object]:
        def run(port: int, ctx: ssl.SSLContext) -> bytes:
            with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10)) as s:
                for i in range(200):
                    s.sendall(tag * 1000 + str(i).encode() + b"\n")
                return _recv_exactly(s, 3)

        return run

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (a, ta, da), (b, tb, db) = await asyncio.gather(
        serve(tmp_path / "a", client(b"a")), serve(tmp_path / "b", client(b"b"))
    )
    assert ta is not None and tb is not None
    want_a = b"".join(b"a" * 1000 + str(i).encode() + b"\n" for i in range(200))
    want_b = want_a.replace(b"a", b"b")
    for session, want in ((a, want_a), (b, want_b)):
        while len(session.data) < len(want):
            session.got_data.clear()
            await asyncio.wait_for(session.got_data.wait(), 10)
        assert bytes(session.data) == want
    ta.write(b"bye")
    tb.write(b"bye")
    assert await asyncio.wait_for(da, 10) == b"bye"
    assert await asyncio.wait_for(db, 10) == b"bye"


async def test_close_notify_is_eof_then_one_connection_lost(tmp_path: Path) -> None:
    def client(port: int, ctx: ssl.SSLContext) -> None:
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10))
        s.sendall(b"QUIT\r\n")
        plain = s.unwrap()  # sends close_notify, waits for the server's
        plain.close()

    session, tls, done = await serve(tmp_path, client)
    assert tls is not None
    await asyncio.wait_for(session.gone.wait(), 10)
    await asyncio.wait_for(done, 10)
    assert bytes(session.data) == b"QUIT\r\n"
    assert session.eof == 1
    assert len(session.lost) == 1


async def test_half_close_without_close_notify_ends_the_session_once(tmp_path: Path) -> None:
    def client(port: int, ctx: ssl.SSLContext) -> None:
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10))
        s.sendall(b"NOOP\r\n")
        s.shutdown(socket.SHUT_WR)  # TCP FIN, no close_notify
        try:
            s.recv(10)
        except (OSError, ssl.SSLError):
            pass
        s.close()

    session, tls, done = await serve(tmp_path, client)
    assert tls is not None
    await asyncio.wait_for(session.gone.wait(), 10)
    await asyncio.wait_for(done, 10)
    assert bytes(session.data) == b"NOOP\r\n"
    assert len(session.lost) == 1


async def test_client_gone_mid_handshake_ends_the_session_once(tmp_path: Path) -> None:
    def client(port: int, ctx: ssl.SSLContext) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(incoming, outgoing)
        try:
            obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        hello = outgoing.read()
        sock.sendall(hello[: len(hello) // 2])  # half a ClientHello, then a reset
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()

    session, tls, done = await serve(tmp_path, client)
    await asyncio.wait_for(done, 10)
    assert tls is None
    assert len(session.lost) == 1


async def test_a_large_write_pauses_writing_and_arrives_whole(tmp_path: Path) -> None:
    size = 8 * 1024 * 1024
    release = asyncio.Event()
    loop = asyncio.get_running_loop()

    def client(port: int, ctx: ssl.SSLContext) -> int:
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=20)) as s:
            s.sendall(b"go\r\n")
            asyncio.run_coroutine_threadsafe(release.wait(), loop).result(20)
            data = _recv_exactly(s, size)
            return sum(data) if data == bytes(range(256)) * (size // 256) else -1

    session, tls, done = await serve(tmp_path, client)
    assert tls is not None
    tls.set_write_buffer_limits(high=64 * 1024)
    chunk = bytes(range(256)) * 256  # 64 KiB
    written = 0
    while not session.paused and written < size:  # the client does not read yet
        tls.write(chunk)
        written += len(chunk)
        await asyncio.sleep(0)  # the loop flushes to the socket until the kernel is full
    assert session.paused == 1
    tls.write(chunk * ((size - written) // len(chunk)))
    release.set()
    assert await asyncio.wait_for(done, 30) == sum(range(256)) * (size // 256)
    assert session.resumed == 1
    tls.close()
    await asyncio.wait_for(session.gone.wait(), 10)
    assert len(session.lost) == 1
