"""Content-scanner clients (clamd, spamd): the shared transport and failure type.

The clients in :mod:`qtoaster.scanners.clamd` and :mod:`qtoaster.scanners.spamd` only
talk to a scanner and return its verdict; the policy decides what the client hears.

Invariants:

- A scanner address is ``HOST:PORT`` (``[v6]:PORT`` for IPv6) or an absolute path to a
  unix socket; :func:`parse_address` is the one parser (``config check`` uses it too).
- Every scanner failure (cannot connect, timeout, protocol error, the scanner's own
  ERROR reply) is :class:`ScannerUnavailable`: a failure is never reported as "clean".
  Errors reading our own spool file are not scanner failures and propagate as
  :class:`OSError`.
"""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["ScannerUnavailable", "close", "connect", "parse_address"]


class ScannerUnavailable(Exception):
    """The scanner gave no usable verdict: down, too slow, or answered an error."""


def parse_address(address: str) -> tuple[str, int] | str:
    """``(host, port)`` for ``HOST:PORT`` or ``[v6]:PORT``; the path for a unix socket.

    Raises :class:`ValueError` with a readable reason for anything else.
    """
    if address.startswith("/"):
        return address
    host, sep, port_text = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"scanner address {address!r}: write an IPv6 address as [ADDR]:PORT")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"scanner address {address!r}: expected HOST:PORT or /path/to/socket")
    return host, int(port_text)


async def connect(address: str, scanner: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a stream to the scanner; any failure is :class:`ScannerUnavailable`."""
    try:
        target = parse_address(address)
    except ValueError as exc:
        raise ScannerUnavailable(str(exc)) from exc
    try:
        if isinstance(target, str):
            return await asyncio.open_unix_connection(target)
        return await asyncio.open_connection(*target)
    except OSError as exc:
        raise ScannerUnavailable(f"{scanner} {address}: cannot connect: {exc}") from exc


async def close(writer: asyncio.StreamWriter) -> None:
    """Close the stream; a peer that already went away is not an error here."""
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
