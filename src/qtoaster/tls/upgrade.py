"""Turning a server connection into TLS (STARTTLS, STLS, SMTPS, POP3S), one way for all.

Invariants: :func:`hold` stops reading at once, before the loop runs again, so the client's
ClientHello reaches TLS and never the clear-text engine (which would drop it as injected
input and the handshake would hang); :func:`handshake` never raises for a failed handshake:
it logs, aborts the connection, calls the session's connection_lost once and answers None.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

from qtoaster.tls.server import session_summary

log = logging.getLogger("qtoaster.tls")


def hold(transport: asyncio.Transport) -> None:
    """Call when the engine has answered 220/+OK (or at connect for implicit TLS)."""
    transport.pause_reading()


async def handshake(
    transport: asyncio.Transport,
    protocol: asyncio.BaseProtocol,
    context: ssl.SSLContext,
    *,
    timeout: float,
    who: str,
) -> asyncio.Transport | None:
    """The TLS transport after a successful server handshake, else None (logged, aborted).

    ``who`` names the session and client in the log lines."""
    loop = asyncio.get_running_loop()
    try:
        upgraded = await loop.start_tls(
            transport, protocol, context, server_side=True, ssl_handshake_timeout=timeout
        )
    except (OSError, TimeoutError) as exc:  # ssl.SSLError and ConnectionError are OSErrors
        log.info("%s TLS handshake failed: %s", who, exc)
        transport.abort()
        _ended(protocol, exc)
        return None
    if upgraded is None:  # the connection went away during the handshake
        _ended(protocol, None)
        return None
    log.info("%s tls %s", who, session_summary(upgraded.get_extra_info("ssl_object")))
    return upgraded


def _ended(protocol: asyncio.BaseProtocol, exc: Exception | None) -> None:
    """asyncio's SSLProtocol tells the session nothing when the handshake fails (it forwards
    connection_lost only after a completed handshake), so the session would never leave
    its worker's session set: tell it here, once."""
    protocol.connection_lost(exc)
