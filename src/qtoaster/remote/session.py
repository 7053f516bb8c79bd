"""One outgoing SMTP connection: a socket, its sans-IO client engine, and the pump between.

:class:`Connection` owns the I/O that ``protocols/smtp/client.py`` leaves out: connecting
(``timeoutconnect``, ``outgoingip``), implicit TLS for port 465, the STARTTLS handshake the
engine asks for, streaming the message body from the queue file's descriptor through the engine's
:class:`BodyEncoder` (DATA) or in BDAT chunks of ``BDAT_CHUNK`` octets (a BINARYMIME message,
RFC 3030, ``protocols/smtp/bdatsend.py``), and reply timeouts (``timeoutremote``).  It never
decides what a reply means: the engine does, and the agent decides what to do with the result.

Invariants: a handshake failure, a timeout or EOF always ends in an engine event (a
``TransactionDone`` with qmail's texts or ``SkipHost``), never in an exception leaking to the
agent; a connection that is returned as reusable has just finished a transaction cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from qtoaster.core.errors import DeliveryAttemptError
from qtoaster.protocols.smtp.bdatsend import BDAT_CHUNK, ChunkFramer
from qtoaster.protocols.smtp.bodyencode import PARTIAL_LINE_TEXT
from qtoaster.protocols.smtp.client import (
    BodyEncoder,
    ClientEngine,
    Closed,
    Event,
    PartialLineError,
    Ready,
    RecipientReport,
    Send,
    SendBody,
    SendChunk,
    SkipHost,
    StartTls,
    TlsMode,
    Transaction,
    TransactionDone,
    TransactionResult,
)
from qtoaster.remote.body import Body, body_lacks_final_lf, chunks
from qtoaster.tls.client import (
    ClientTlsMode,
    ClientTlsPolicy,
    check_name,
    describe,
    verify_failure_text,
)

log = logging.getLogger("qtoaster.remote")

_READ = 65536
_CHUNK = 65536


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str  # MX or relay name (for TLS policy, SNI and logs)
    address: str  # the IP connected to (for qmail's texts)
    port: int


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float  # control/timeoutconnect
    remote: float  # control/timeoutremote


class ConnectFailed(DeliveryAttemptError):
    """No SMTP session could be started at this address (refused, timeout, TLS at 465)."""


class Skip(DeliveryAttemptError):
    """The greeting was 4xx/5xx (rfc2821 patch): try the next MX."""


class TlsFallback(DeliveryAttemptError):
    """An opportunistic STARTTLS handshake failed: the same host may be tried in clear."""


_ENGINE_TLS = {
    ClientTlsMode.NONE: TlsMode.NONE,
    ClientTlsMode.OPPORTUNISTIC: TlsMode.OPPORTUNISTIC,
    ClientTlsMode.REQUIRED: TlsMode.REQUIRED,
}


class Connection:
    """A connected SMTP client session; run transactions on it, then close or cache it."""

    def __init__(
        self,
        endpoint: Endpoint,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        engine: ClientEngine,
        policy: ClientTlsPolicy,
        timeouts: Timeouts,
    ) -> None:
        self.endpoint = endpoint
        self._reader = reader
        self._writer = writer
        self._engine = engine
        self._policy = policy
        self._timeouts = timeouts
        self.tls = describe_transport(writer) if endpoint.port == 465 else ""
        self.usable = True  # False once the session is over or out of step

    @classmethod
    async def open(
        cls,
        endpoint: Endpoint,
        *,
        helo: str,
        policy: ClientTlsPolicy,
        timeouts: Timeouts,
        source: str | None = None,
        requiretls: bool = False,
    ) -> Connection:
        """Connect; with port 465, handshake before the greeting (implicit TLS, 17.5)."""
        implicit = endpoint.port == 465 and policy.context is not None
        try:
            async with asyncio.timeout(timeouts.connect):
                reader, writer = await asyncio.open_connection(
                    endpoint.address,
                    endpoint.port,
                    ssl=policy.context if implicit else None,
                    server_hostname=_sni(policy, endpoint) if implicit else None,
                    local_addr=_source(source, endpoint.address),
                    limit=_READ,
                )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise ConnectFailed(str(exc) or type(exc).__name__) from None
        _nodelay(writer)
        mode = ClientTlsMode.NONE if implicit else policy.mode
        engine = ClientEngine(
            peer=endpoint.address,
            helo=helo,
            tls=_ENGINE_TLS[mode],
            tls_file=policy.file,
            tls_active=implicit,
            tls_permanent=requiretls,  # RFC 8689: failed TLS bounces (#5.7.10)
        )
        return cls(endpoint, reader, writer, engine, policy, timeouts)

    async def transact(self, tx: Transaction, body: Body) -> TransactionResult:
        """Send one message; raises Skip (greeting 4xx/5xx) or TlsFallback (opportunistic)."""
        if body_lacks_final_lf(body):
            # qmail-remote checks before it sends; nothing goes to the wire.
            return TransactionResult(
                tuple(RecipientReport("r", "") for _ in tx.recipients), "D", PARTIAL_LINE_TEXT
            )
        result = await self._pump(self._engine.send_message(tx), body)
        if result.letter != "K":
            self.usable = self.usable and self._engine.ready
        return result

    async def close(self) -> None:
        """QUIT politely if the session is alive (without waiting long), then close."""
        if self.usable and self._engine.ready:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await self._pump_quit(self._engine.quit())
        self.usable = False
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()

    def idle_ok(self) -> bool:
        """Still fit for reuse: open, and the peer said nothing while we were idle (a 421
        "timeout" sitting in the buffer would be read as the answer to our MAIL)."""
        buffered = len(getattr(self._reader, "_buffer", b""))  # StreamReader has no public view
        return self.usable and not self._reader.at_eof() and buffered == 0

    def abort(self) -> None:
        self.usable = False
        self._writer.transport.abort()

    # -- the pump --------------------------------------------------------------------

    async def _pump(self, first: Iterable[Event], body: Body) -> TransactionResult:
        pending: deque[Event] = deque(first)
        source = _ChunkSource(body)
        while True:
            while pending:
                event = pending.popleft()
                if isinstance(event, Send):
                    self._writer.write(event.data)
                elif isinstance(event, StartTls):
                    pending.extend(await self._start_tls())
                elif isinstance(event, SendBody):
                    pending.extend(await self._send_body(body))
                elif isinstance(event, SendChunk):
                    pending.extend(await self._send_chunk(source))
                elif isinstance(event, TransactionDone):
                    return event.result
                elif isinstance(event, SkipHost):
                    self.abort()
                    raise Skip(event.reason)
                elif isinstance(event, Closed):
                    self.usable = False
                elif isinstance(event, Ready):
                    pass
            pending.extend(await self._read_more())

    async def _pump_quit(self, first: Iterable[Event]) -> None:
        pending: deque[Event] = deque(first)
        while True:
            while pending:
                event = pending.popleft()
                if isinstance(event, Send):
                    self._writer.write(event.data)
                elif isinstance(event, Closed):
                    return
            pending.extend(await self._read_more())

    async def _read_more(self) -> list[Event]:
        try:
            await self._writer.drain()
            async with asyncio.timeout(self._timeouts.remote):
                data = await self._reader.read(_READ)
        except (OSError, TimeoutError, ssl.SSLError):
            data = b""
        if not data:
            self.usable = False
            return list(self._engine.connection_lost())
        return list(self._engine.receive(data))

    async def _start_tls(self) -> list[Event]:
        policy, endpoint = self._policy, self.endpoint
        assert policy.context is not None
        try:
            await self._writer.drain()
            async with asyncio.timeout(self._timeouts.remote):
                await self._writer.start_tls(policy.context, server_hostname=_sni(policy, endpoint))
        except ssl.SSLCertVerificationError as exc:
            return self._refused(verify_failure_text(policy.file, exc))
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            if policy.mode is ClientTlsMode.OPPORTUNISTIC:
                self.abort()
                raise TlsFallback(str(exc) or type(exc).__name__) from None
            return self._tls_broken(f"TLS connect failed: {exc or type(exc).__name__}")
        ssl_object = self._writer.get_extra_info("ssl_object")
        if policy.mode is ClientTlsMode.REQUIRED and policy.server_hostname:
            problem = check_name(ssl_object.getpeercert() or {}, policy.server_hostname)
            if problem:
                return self._refused(problem)
        if policy.check is not None:
            problem = policy.check(peer_chain(ssl_object))
            if problem:
                return self._refused(f"TLS unable to verify server {endpoint.host}: {problem}")
        self.tls = describe_transport(self._writer)
        return list(self._engine.tls_started())

    def _refused(self, reason: str) -> list[Event]:
        """The certificate is not acceptable: the log line names the policy (MTA-STS, DANE)."""
        if self._policy.label:
            ep = self.endpoint
            log.info(
                "remote %s [%s] refused by %s: %s", ep.host, ep.address, self._policy.label, reason
            )
        return self._tls_broken(reason)

    def _tls_broken(self, reason: str) -> list[Event]:
        self.usable = False
        events = list(self._engine.tls_failed(reason))
        self._writer.transport.abort()
        return events

    async def _send_body(self, body: Body) -> list[Event]:
        encoder = BodyEncoder()
        pieces = chunks(body, _CHUNK)  # os.pread from the descriptor the send role passed
        try:
            while True:
                try:
                    chunk = next(pieces, b"")
                except OSError as exc:
                    return self._body_failed(exc)
                if not chunk:
                    break
                self._writer.write(encoder.encode(chunk))
                if self._writer.transport.get_write_buffer_size() > 4 * _CHUNK:
                    async with asyncio.timeout(self._timeouts.remote):
                        await self._writer.drain()
            self._writer.write(encoder.finish())
        except PartialLineError as exc:  # checked before sending; only if the file changed
            self.abort()
            return self._engine.body_failed(str(exc), permanent=True)
        except (OSError, TimeoutError):  # the peer went away or stopped reading
            self.abort()
            return self._engine.connection_lost()
        return self._engine.body_sent()

    async def _send_chunk(self, source: _ChunkSource) -> list[Event]:
        """The next BDAT chunk, written and drained within ``timeoutremote``."""
        try:
            data, last = source.next()
        except OSError as exc:
            return self._body_failed(exc)
        events = deque(self._engine.chunk(data, last=last))
        while events and isinstance(first := events[0], Send):
            self._writer.write(first.data)
            events.popleft()
        try:
            async with asyncio.timeout(self._timeouts.remote):
                await self._writer.drain()
        except (OSError, TimeoutError):  # the peer went away or stopped reading
            self.abort()
            return [*events, *self._engine.connection_lost()]
        return list(events)

    def _body_failed(self, exc: OSError) -> list[Event]:
        """The queue file could not be read: temporary, and no dot goes out."""
        self.abort()
        text = f"Unable to read the message from the queue: {exc.strerror or exc}. (#4.3.0)"
        return self._engine.body_failed(text, permanent=False)


class _ChunkSource:
    """The body's BDAT chunks, read from the queue file as they are asked for; a chunk is
    the last one when the file has nothing more (the framer keeps one back until then)."""

    def __init__(self, body: Body) -> None:
        self._pieces = chunks(body, _CHUNK)
        self._framer = ChunkFramer(BDAT_CHUNK)
        self._ready: deque[bytes] = deque()
        self._left = body.length

    def next(self) -> tuple[bytes, bool]:
        """The next chunk and whether it is the last; OSError when the file cannot be read
        or is shorter than its size (no partial message goes out as a whole one)."""
        while not self._ready:
            piece = next(self._pieces, b"")
            if not piece:
                if self._left:
                    raise OSError(errno.EIO, "the queue file is shorter than the message")
                return self._framer.finish(), True
            self._left -= len(piece)
            self._ready.extend(self._framer.feed(piece))
        return self._ready.popleft(), False


def describe_transport(writer: asyncio.StreamWriter) -> str:
    ssl_object = writer.get_extra_info("ssl_object")
    return describe(ssl_object) if ssl_object is not None else ""


def peer_chain(ssl_object: ssl.SSLObject) -> list[bytes]:
    """The certificates the peer sent (DER, leaf first).  Python 3.13 names the method
    ``get_unverified_chain``; before, it is only on the C object (``_sslobj``)."""
    getter = getattr(ssl_object, "get_unverified_chain", None)
    if getter is None:
        getter = getattr(getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None)
    if getter is None:
        leaf = ssl_object.getpeercert(binary_form=True)
        return [leaf] if leaf else []
    chain = getter() or []
    return [c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER) for c in chain]  # type: ignore[attr-defined]


def _sni(policy: ClientTlsPolicy, endpoint: Endpoint) -> str | None:
    name = policy.server_hostname or endpoint.host
    # SNI carries host names only (RFC 6066 3); an IP literal relay sends none.
    return None if _is_ip(name) else name


def _is_ip(name: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in name else socket.AF_INET, name)
    except OSError:
        return False
    return True


def _source(source: str | None, address: str) -> tuple[str, int] | None:
    """control/outgoingip binds the source address, for the matching address family."""
    if not source or (":" in source) != (":" in address):
        return None
    return (source, 0)


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
