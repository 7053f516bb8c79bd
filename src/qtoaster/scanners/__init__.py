"""Content-scanner clients (clamd, spamd): the shared transport and failure type.

The clients in :mod:`qtoaster.scanners.clamd` and :mod:`qtoaster.scanners.spamd` only
talk to a scanner and return its verdict; the policy decides what the client hears.

Invariants:

- A scanner address is ``HOST:PORT`` (``[v6]:PORT`` for IPv6) or an absolute path to a
  unix socket; ``config.endpoints.parse_address`` is the one parser (settings use it too).
- Every scanner failure (cannot connect, timeout, protocol error, the scanner's own
  ERROR reply) is :class:`ScannerUnavailable`: a failure is never reported as "clean".
  Errors reading our own spool file are not scanner failures and propagate as
  :class:`OSError`.
"""

from __future__ import annotations

import asyncio
import contextlib

from qtoaster.config.endpoints import parse_address
from qtoaster.core.errors import TemporaryFailure

__all__ = ["ScannerUnavailable", "close", "connect"]


class ScannerUnavailable(TemporaryFailure):
    """The scanner gave no usable verdict: down, too slow, or answered an error."""


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
