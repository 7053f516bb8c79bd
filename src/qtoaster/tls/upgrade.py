"""Turning a server connection into TLS (STARTTLS, STLS, SMTPS, POP3S), one way for all.

Two steps: :func:`hold` (synchronous, called when the engine has answered 220/+OK, or at
connect for implicit TLS) hands the connection to TLS at once, before the loop runs again;
:func:`handshake` waits for the handshake. :func:`start` is both for a session driven by
net/driver.py's EngineDriver (pop3d, imapd): hold, drop the engine's clear-text input,
and the handshake as the session's waiting step.

Invariants: from :func:`hold` on, every byte read goes to TLS, never to the clear-text
engine (which would drop the ClientHello as injected input, and the handshake would hang).
The TLS protocol takes the transport right there, not on a later loop turn as
``loop.start_tls`` does: CPython before 3.11.5 (Debian 12's 3.11.2) registers a new
transport's reader on the turn after connection_made even when the protocol paused it
there, so a paused implicit-TLS connection was read anyway, into the session.
:func:`handshake` never raises for a failed handshake: it logs, aborts the connection,
calls the session's connection_lost once and answers None.

Memory (issue 12 item 3): asyncio's SSLProtocol keeps a 256 KiB receive buffer per
connection, so 2,000 idle SMTPS sessions cost 560 MiB. :class:`_LeanSSLProtocol` is that
protocol with one receive buffer per process instead: the event loop reads into it and
``buffer_updated`` copies the bytes into the connection's MemoryBIO at once, in the same
callback, so no connection holds the buffer between reads (as net/driver.py's
_READ_BUFFER for clear text). An idle TLS session then costs its SSLObject, the two
MemoryBIOs and the session objects: about 20 to 30 KiB (docs/tls.md, "Memory").

Memory comes back: OpenSSL's per-connection state is malloc'd from glibc's heap, which
keeps freed memory inside the process (848 MiB stayed after 2,000 sessions closed). Once
:data:`TRIM_AFTER` TLS sessions have ended, ``malloc_trim(0)`` hands the free pages back
to the system, at most once per :data:`TRIM_EVERY` seconds (a few ms with a large heap);
where libc has no malloc_trim (musl) nothing is done.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import ssl
import time
from asyncio import sslproto
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, cast

from qtoaster.metrics import definitions as metrics
from qtoaster.tls.server import session_summary

log = logging.getLogger("qtoaster.tls")

# The process's one TLS receive buffer: 64 KiB, as net/driver.py's clear-text one (a read
# of up to 64 KiB of records, fed into the connection's MemoryBIO before the next read).
_TLS_READ_BUFFER = memoryview(bytearray(65536))

TRIM_AFTER = 256  # TLS sessions ended since the last trim
TRIM_EVERY = 5.0  # seconds, at least, between two trims


def _malloc_trim() -> Any:
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


class _Trim:
    """When to give freed heap back: counts ended TLS sessions, one call pending at most."""

    function = _malloc_trim()
    ended = 0
    pending = False
    last = 0.0

    @classmethod
    def session_ended(cls, loop: asyncio.AbstractEventLoop) -> None:
        cls.ended += 1
        if cls.ended < TRIM_AFTER or cls.pending or cls.function is None:
            return
        cls.pending = True
        # After the burst of closes: the sessions' objects are freed by then.
        delay = max(0.5, cls.last + TRIM_EVERY - time.monotonic())
        loop.call_later(delay, cls.trim)

    @classmethod
    def trim(cls) -> None:
        cls.ended = 0
        cls.pending = False
        cls.last = time.monotonic()
        # The ended sessions are cycles (transport <-> protocols) that lived long enough to
        # reach the oldest generation, which an idle worker may not collect for hours.
        gc.collect()
        cls.function(0)


class _LeanSSLProtocol(sslproto.SSLProtocol):
    """asyncio's SSLProtocol reading through the process's one buffer; see the docstring."""

    # The size SSLProtocol.__init__ allocates its own buffer with (dropped at once below)
    # and the chunk its non-buffered read path asks SSLObject.read for: one TLS record.
    max_size = 16 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # asyncio's buffer_updated copies ``_ssl_buffer_view[:nbytes]`` into the MemoryBIO
        # at once, in the loop's read callback, before any other connection is read: the
        # shared view is safe there.  The per-connection buffer asyncio made is dropped.
        self._ssl_buffer = _TLS_READ_BUFFER.obj
        self._ssl_buffer_view = _TLS_READ_BUFFER

    def get_buffer(self, n: int) -> memoryview:
        return _TLS_READ_BUFFER  # asyncio's would grow a per-connection buffer to 256 KiB

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        _Trim.session_ended(self._loop)


@dataclass(slots=True)
class Held:
    """A connection handed to TLS by :func:`hold`, its handshake under way."""

    transport: asyncio.Transport
    protocol: asyncio.BaseProtocol  # the session's: it gets the TLS transport
    tls: _LeanSSLProtocol
    waiter: asyncio.Future[None]
    calls: tuple[asyncio.Handle, ...]


def hold(
    transport: asyncio.Transport,
    protocol: asyncio.BaseProtocol,
    context: ssl.SSLContext,
    *,
    timeout: float,
) -> Held:
    """Hand the connection to TLS now (see the module docstring): loop.start_tls's steps for
    the server side (3.11 base_events.start_tls), with :class:`_LeanSSLProtocol` and the
    protocol swapped before this returns. Bytes read before the TLS protocol's
    connection_made wait in its incoming MemoryBIO (asyncio's SSLProtocol buffers them
    in its unwrapped state) and start the handshake then."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    tls = _LeanSSLProtocol(
        loop,
        protocol,
        context,
        waiter,
        server_side=True,
        call_connection_made=False,
        ssl_handshake_timeout=timeout,
    )
    transport.pause_reading()
    transport.set_protocol(tls)
    made = loop.call_soon(tls.connection_made, transport)
    resumed = loop.call_soon(transport.resume_reading)
    return Held(transport, protocol, tls, waiter, (made, resumed))


async def handshake(held: Held, *, who: str) -> asyncio.Transport | None:
    """The TLS transport after a successful server handshake, else None (logged, aborted).

    ``who`` names the session and client in the log lines."""
    transport, protocol = held.transport, held.protocol
    try:
        try:
            await held.waiter
        except BaseException:
            transport.close()
            for call in held.calls:
                call.cancel()
            raise
    except (OSError, TimeoutError) as exc:  # ssl.SSLError and ConnectionError are OSErrors
        metrics.tls_handshake(False)
        log.info("tls %s TLS handshake failed: %s", who, exc)
        transport.abort()
        _ended(protocol, exc)
        return None
    upgraded: asyncio.Transport | None = held.tls._app_transport
    metrics.tls_handshake(upgraded is not None)
    if upgraded is None:  # the connection went away during the handshake
        _ended(protocol, None)
        return None
    log.info("tls %s tls %s", who, session_summary(upgraded.get_extra_info("ssl_object")))
    return upgraded


class Upgradable(Protocol):
    """What :func:`start` uses of a session (net/driver.py's EngineDriver, an asyncio
    protocol)."""

    transport: asyncio.Transport | None

    def wait_for(self, step: Coroutine[Any, Any, None]) -> None: ...


def start(
    session: Upgradable,
    context: ssl.SSLContext,
    *,
    timeout: float,
    who: str,
    discard: Callable[[], None],
    done: Callable[[], None],
) -> None:
    """Hand ``session``'s connection to TLS now (:func:`hold`), ``discard()`` what the
    clear-text engine holds (nothing sent before the handshake may become a command), and
    wait for the handshake as the session's step: on success the session's transport is the
    TLS one and ``done()`` is called (greet, or tell the engine STARTTLS is done); a failed
    handshake has closed the connection (:func:`handshake`)."""
    transport = session.transport
    assert transport is not None
    held = hold(transport, cast(asyncio.BaseProtocol, session), context, timeout=timeout)
    discard()
    session.wait_for(_finish(session, held, who, done))


async def _finish(session: Upgradable, held: Held, who: str, done: Callable[[], None]) -> None:
    upgraded = await handshake(held, who=who)
    if upgraded is not None:
        session.transport = upgraded
        done()


def _ended(protocol: asyncio.BaseProtocol, exc: Exception | None) -> None:
    """asyncio's SSLProtocol tells the session nothing when the handshake fails (it forwards
    connection_lost only after a completed handshake), so the session would never leave
    its worker's session set: tell it here, once."""
    protocol.connection_lost(exc)
