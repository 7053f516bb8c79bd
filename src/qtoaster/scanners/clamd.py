"""clamd client: scan a spooled message with ``zINSTREAM`` (clamd(8), "INSTREAM").

Protocol (clamd(8)): the command ``zINSTREAM\\0``, then chunks of ``<uint32 big-endian
length><bytes>``, then a zero-length chunk; clamd answers one NUL-terminated line:
``stream: OK``, ``stream: <name> FOUND`` or ``<reason> ERROR`` (for example
``INSTREAM size limit exceeded. ERROR``, after which clamd closes the connection).

Invariants:

- The message is read from the spool file starting at ``offset`` (the queue file holds
  our own header first), in bounded chunks read in a worker thread, so the event loop
  never blocks on the disk and memory stays at one chunk.
- At most ``max_bytes`` are sent.  Anything past that is NOT scanned; clamd's
  ``StreamMaxLength`` must be at least ``max_bytes`` or clamd answers ERROR (which is
  :class:`ScannerUnavailable`, never "clean").
- The whole exchange, connect included, is bounded by ``timeout``; every scanner failure
  is :class:`ScannerUnavailable`.  Spool-file read errors propagate as :class:`OSError`.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from typing import BinaryIO

from qtoaster.metrics import definitions as metrics
from qtoaster.scanners import ScannerUnavailable, close, connect

CHUNK = 64 << 10  # bytes per INSTREAM chunk (and per disk read)
MAX_REPLY = 4096  # a clamd reply line is short; more is a protocol error

_OK = b"stream: OK"
_FOUND = b" FOUND"
_PREFIX = b"stream: "


@dataclass(frozen=True)
class ClamdResult:
    infected: bool
    virus: str | None  # clamd's signature name when infected


@metrics.timed_scan("clamd")
async def clamd_scan(
    address: str, path: str, offset: int, *, timeout: float, max_bytes: int = 25 << 20
) -> ClamdResult:
    """Scan ``path`` from ``offset`` with the clamd at ``address``.

    Only the first ``max_bytes`` of the message are sent and scanned; the rest of a
    larger message goes unscanned (keep clamd's ``StreamMaxLength`` >= ``max_bytes``).
    Raises :class:`ScannerUnavailable` when clamd cannot be reached, takes longer than
    ``timeout`` seconds in all, or answers anything but OK / FOUND.
    """
    spool = await asyncio.to_thread(open, path, "rb")
    try:
        async with asyncio.timeout(timeout):
            return await _exchange(address, spool, offset, max_bytes)
    except TimeoutError as exc:
        raise ScannerUnavailable(f"clamd {address}: no verdict within {timeout:g}s") from exc
    finally:
        await asyncio.to_thread(spool.close)


async def _exchange(address: str, spool: BinaryIO, offset: int, max_bytes: int) -> ClamdResult:
    reader, writer = await connect(address, "clamd")
    try:
        try:
            await _stream(writer, address, spool, offset, max_bytes)
        except ScannerUnavailable as lost:
            # clamd answers "... ERROR" and closes at once, possibly while we still send:
            # its answer (already in our buffer) says more than "connection lost".
            try:
                answer = await _read_reply(reader, address)
            except ScannerUnavailable:
                raise lost from None
            parse_reply(answer, address)  # an ERROR raises; anything else was lost
            raise
        return parse_reply(await _read_reply(reader, address), address)
    finally:
        await close(writer)


async def _stream(
    writer: asyncio.StreamWriter, address: str, spool: BinaryIO, offset: int, max_bytes: int
) -> None:
    """The INSTREAM command, the message in chunks of at most CHUNK, the empty chunk."""
    await _send(writer, address, b"zINSTREAM\0")
    await asyncio.to_thread(spool.seek, offset)
    remaining = max_bytes
    while remaining > 0:
        chunk = await asyncio.to_thread(spool.read, min(CHUNK, remaining))
        if not chunk:
            break
        remaining -= len(chunk)
        await _send(writer, address, struct.pack(">I", len(chunk)) + chunk)
    await _send(writer, address, struct.pack(">I", 0))


async def _send(writer: asyncio.StreamWriter, address: str, data: bytes) -> None:
    try:
        writer.write(data)
        await writer.drain()
    except OSError as exc:  # clamd closes early after a size-limit ERROR
        raise ScannerUnavailable(f"clamd {address}: connection lost while sending: {exc}") from exc


async def _read_reply(reader: asyncio.StreamReader, address: str) -> bytes:
    try:
        line = await reader.readuntil(b"\0")
    except asyncio.IncompleteReadError as exc:
        raise ScannerUnavailable(f"clamd {address}: closed without a verdict") from exc
    except asyncio.LimitOverrunError as exc:
        raise ScannerUnavailable(f"clamd {address}: reply line too long") from exc
    except OSError as exc:
        raise ScannerUnavailable(f"clamd {address}: {exc}") from exc
    return line[:-1]


def parse_reply(line: bytes, address: str = "clamd") -> ClamdResult:
    """Map one clamd INSTREAM reply (without its NUL) to a result, or raise."""
    if line == _OK:
        return ClamdResult(infected=False, virus=None)
    if line.startswith(_PREFIX) and line.endswith(_FOUND) and len(line) < MAX_REPLY:
        # The name ends up in a log line and a reply: printable ASCII only.
        raw = line[len(_PREFIX) : -len(_FOUND)]
        name = "".join(chr(b) if 0x20 < b < 0x7F else "?" for b in raw.strip())
        if name:
            return ClamdResult(infected=True, virus=name)
    text = line[:200].decode("ascii", "replace")
    raise ScannerUnavailable(f"clamd {address}: {text!r}")
