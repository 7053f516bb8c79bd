"""tls/upgrade.py with real sockets: a failed handshake ends the session's protocol.

asyncio's start_tls never tells the application protocol that the connection is gone when
the handshake fails (its SSLProtocol only forwards connection_lost once the handshake made
the app protocol's connection), so upgrade.handshake must, or sessions would pile up in
the worker's session set.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

from tests.tls.pki import PrivateCA

from qtoaster.tls import upgrade


class Recorder(asyncio.Protocol):
    def __init__(self, made: asyncio.Future[Recorder]) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost: list[Exception | None] = []
        self.made = made

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if not self.made.done():
            self.made.set_result(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)


def server_context(tmp_path: Path) -> ssl.SSLContext:
    _, pem = PrivateCA().issue("mx.example.test", dns=["mx.example.test"])
    (tmp_path / "cert.pem").write_bytes(pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem")
    return context


async def upgrade_with(tmp_path: Path, client_bytes: bytes) -> tuple[Recorder, object]:
    loop = asyncio.get_running_loop()
    made: asyncio.Future[Recorder] = loop.create_future()
    server = await loop.create_server(lambda: Recorder(made), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        protocol = await made
        assert protocol.transport is not None
        held = upgrade.hold(protocol.transport, protocol, server_context(tmp_path), timeout=5)
        writer.write(client_bytes)  # not a ClientHello: the handshake fails
        await writer.drain()
        result = await upgrade.handshake(held, who="test")
        return protocol, result
    finally:
        writer.close()
        server.close()


async def test_failed_handshake_ends_the_protocol_once(tmp_path: Path) -> None:
    protocol, result = await upgrade_with(tmp_path, b"EHLO this is not TLS\r\n" * 4)
    assert result is None
    assert len(protocol.lost) == 1
