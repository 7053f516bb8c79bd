"""spamd client: ``SYMBOLS`` with the SPAMC/1.5 protocol, and the X-Spam-* header lines.

Protocol (SpamAssassin ``spamd/PROTOCOL``): the request ``SYMBOLS SPAMC/1.5``, then
``Content-length: N`` and optionally ``User: NAME``, a blank line, and exactly N bytes
of message; spamd answers ``SPAMD/1.1 0 EX_OK``, a ``Spam: True ; 1004.2 / 5.0``
header, a blank line and the comma-separated names of the rules that hit, then closes.
A non-zero code is a sysexits value (for example 76 EX_PROTOCOL).

Invariants:

- A message longer than ``max_bytes`` (after ``offset``) is never sent: spamd_check
  raises :class:`SpamdTooBig` (not a scanner failure; spamc likewise passes such a
  message through unscanned, its default limit is 500 KB).  The caller decides whether
  to add a header saying so.
- The message is read in a worker thread (it is bounded by ``max_bytes``).
- The whole exchange is bounded by ``timeout``; any scanner failure, including a
  non-zero spamd code or an unparseable answer, is :class:`ScannerUnavailable`.
- Rule names in a result are restricted to ``[A-Za-z0-9_.-]`` so that header lines built
  from them can never carry a line break.
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass

from qtoaster.core.errors import QtoasterError
from qtoaster.metrics import definitions as metrics
from qtoaster.scanners import ScannerUnavailable, close, connect

MAX_RESPONSE = 256 << 10  # a SYMBOLS answer is a few hundred bytes; more is wrong
HEADER_WIDTH = 78  # RFC 5322 section 2.1.1: lines SHOULD be at most 78 characters
_TAB = 8  # columns a folding TAB takes, so folded lines look right in a terminal

_STATUS = re.compile(rb"SPAMD/(\d+)\.(\d+) +(\d+) *(.*)")
_NUMBER = rb"(-?\d+(?:\.\d+)?)"
_SPAM = re.compile(rb"(true|false|yes|no) *; *" + _NUMBER + rb" */ *" + _NUMBER, re.I)
_SYMBOL = re.compile(r"[A-Za-z0-9_.-]+")
_USER = re.compile(r"[^\s\x00-\x1f\x7f]+")


class SpamdTooBig(QtoasterError):
    """The message exceeds ``max_bytes``: it was not sent to spamd and is not scanned."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"message of {size} bytes exceeds the spamd limit of {limit}")
        self.size = size
        self.limit = limit


@dataclass(frozen=True)
class SpamdResult:
    spam: bool
    score: float
    threshold: float
    symbols: tuple[str, ...]


@metrics.timed_scan("spamd")
async def spamd_check(
    address: str,
    path: str,
    offset: int,
    *,
    timeout: float,
    user: str | None = None,
    max_bytes: int = 512 << 10,
) -> SpamdResult:
    """Ask the spamd at ``address`` about ``path`` from ``offset``.

    Raises :class:`SpamdTooBig` (nothing sent) when the message exceeds ``max_bytes``,
    :class:`ScannerUnavailable` when spamd cannot be reached, takes longer than
    ``timeout`` seconds in all, or answers an error.
    """
    message = await asyncio.to_thread(_read_message, path, offset, max_bytes)
    request = build_request(message, user)
    try:
        async with asyncio.timeout(timeout):
            response = await _exchange(address, request)
    except TimeoutError as exc:
        raise ScannerUnavailable(f"spamd {address}: no verdict within {timeout:g}s") from exc
    return parse_response(response, address)


def _read_message(path: str, offset: int, max_bytes: int) -> bytes:
    with open(path, "rb") as spool:
        size = os.fstat(spool.fileno()).st_size - offset
        if size > max_bytes:
            raise SpamdTooBig(size, max_bytes)
        spool.seek(offset)
        message = spool.read(max_bytes + 1)
    if len(message) > max_bytes:  # the file grew after fstat: still never send more
        raise SpamdTooBig(len(message), max_bytes)
    return message


def build_request(message: bytes, user: str | None = None) -> bytes:
    """The SYMBOLS request for ``message`` (spamd/PROTOCOL, SPAMC/1.5)."""
    head = f"SYMBOLS SPAMC/1.5\r\nContent-length: {len(message)}\r\n"
    if user is not None:
        if not _USER.fullmatch(user):
            raise ValueError(f"spamd user {user!r}: no spaces or control characters allowed")
        head += f"User: {user}\r\n"
    return head.encode("utf-8") + b"\r\n" + message


async def _exchange(address: str, request: bytes) -> bytes:
    reader, writer = await connect(address, "spamd")
    try:
        writer.write(request)
        await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()  # spamc shuts down its sending side too
        response = await reader.read(MAX_RESPONSE + 1)
        while response and len(response) <= MAX_RESPONSE:
            more = await reader.read(MAX_RESPONSE + 1 - len(response))
            if not more:
                break
            response += more
    except OSError as exc:
        raise ScannerUnavailable(f"spamd {address}: {exc}") from exc
    finally:
        await close(writer)
    if len(response) > MAX_RESPONSE:
        raise ScannerUnavailable(f"spamd {address}: answer longer than {MAX_RESPONSE} bytes")
    return response


def parse_response(response: bytes, address: str = "spamd") -> SpamdResult:
    """Parse a complete SYMBOLS answer, or raise :class:`ScannerUnavailable`."""
    head, sep, body = response.replace(b"\r\n", b"\n").partition(b"\n\n")
    lines = head.split(b"\n")
    status = _STATUS.fullmatch(lines[0].strip())
    if status is None:
        raise ScannerUnavailable(f"spamd {address}: bad answer {lines[0][:100]!r}")
    if status[3] != b"0":
        text = status[4][:100].decode("ascii", "replace")
        raise ScannerUnavailable(f"spamd {address}: error {int(status[3])} {text}")
    headers = dict(_header(line) for line in lines[1:] if b":" in line)
    spam = _SPAM.fullmatch(headers.get(b"spam", b""))
    if not sep or spam is None:
        raise ScannerUnavailable(f"spamd {address}: answer without a Spam header")
    length = headers.get(b"content-length")
    if length is not None:
        if not length.isdigit() or int(length) > len(body):
            raise ScannerUnavailable(f"spamd {address}: answer shorter than its Content-length")
        body = body[: int(length)]
    names = body.decode("ascii", "replace").strip().split(",")
    return SpamdResult(
        spam=spam[1].lower() in (b"true", b"yes"),
        score=float(spam[2]),
        threshold=float(spam[3]),
        symbols=tuple(name.strip() for name in names if _SYMBOL.fullmatch(name.strip())),
    )


def _header(line: bytes) -> tuple[bytes, bytes]:
    name, _, value = line.partition(b":")
    return name.strip().lower(), value.strip()


def spam_headers(result: SpamdResult, hostname: str) -> bytes:
    """X-Spam-Checker-Version, X-Spam-Status and X-Spam-Score lines, LF-terminated.

    The layout follows SpamAssassin's own headers (``score=%.1f required=%.1f
    tests=A,B``, ``tests=none`` when nothing hit), folded at commas and spaces with a
    TAB so that no line exceeds 78 columns (a single over-long rule name excepted).
    """
    if not hostname or any(ord(char) <= 0x20 or ord(char) >= 0x7F for char in hostname):
        raise ValueError(f"hostname {hostname!r}: printable ASCII without spaces expected")
    verdict = "Yes" if result.spam else "No"
    symbols = [name for name in result.symbols if _SYMBOL.fullmatch(name)] or ["none"]
    listed = [f"{name}," for name in symbols[:-1]] + [symbols[-1]]
    words = [
        ("", f"X-Spam-Status: {verdict},"),
        (" ", f"score={result.score:.1f}"),
        (" ", f"required={result.threshold:.1f}"),
        (" ", f"tests={listed[0]}"),
    ]
    words += [("", name) for name in listed[1:]]
    return (
        f"X-Spam-Checker-Version: SpamAssassin spamd on {hostname}\n"
        + _fold(words)
        + f"X-Spam-Score: {result.score:.1f}\n"
    ).encode("ascii")


def _fold(words: list[tuple[str, str]]) -> str:
    """Join (separator, word) pairs into one header; a fold (LF TAB) replaces the
    separator where the line would pass 78 columns (RFC 5322 section 2.2.3).

    Rule names carry their comma, so a comma always ends its line, as in
    SpamAssassin's own ``tests=`` lists.
    """
    lines = [""]
    for separator, word in words:
        width = len(lines[-1]) + (_TAB - 1 if lines[-1].startswith("\t") else 0)
        if lines[-1] and width + len(separator) + len(word) > HEADER_WIDTH:
            lines.append("\t" + word)
        else:
            lines[-1] += separator + word
    return "".join(line + "\n" for line in lines)
