"""IMAP wire encodings of values: strings, literals, flag lists, dates, mailbox names.

Everything returns ``bytes`` ready to be put in a response (RFC 9051 4.3, 9). Strings that
cannot be a quoted string (CR, LF, NUL, 8-bit bytes, or longer than :data:`QUOTED_MAX`)
become a literal ``{n}\\r\\n<data>``: the one form every client reads.

Modified UTF-7 (RFC 3501 5.1.3) is here too because IMAP4rev1 mailbox names need it
(IMAP4rev2 and UTF8=ACCEPT use UTF-8 instead; the session decides which).
"""

from __future__ import annotations

import base64
import binascii
import datetime
from collections.abc import Iterable

from qtoaster.maildir.storeapi import SYSTEM_FLAGS

# A quoted string longer than this is sent as a literal: no limit in the RFC, but some
# clients keep quoted strings in fixed buffers.
QUOTED_MAX = 1000

_NEEDS_LITERAL = frozenset(b"\r\n\x00") | frozenset(range(0x80, 0x100))
# ATOM-CHAR: any CHAR except atom-specials (RFC 9051 9): ( ) { SP CTL % * " \ ]
_ATOM_SPECIALS = frozenset(b'(){ %*"\\]') | frozenset(range(0x00, 0x20)) | {0x7F}
_MONTHS = b"Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()


def _bytes(s: str | bytes) -> bytes:
    return s if isinstance(s, bytes) else s.encode("utf-8", "surrogateescape")


def literal(b: bytes) -> bytes:
    """``{n}\\r\\n`` followed by the data (a synchronizing literal as a server sends it)."""
    return b"{%d}\r\n%b" % (len(b), b)


def quoted(s: str | bytes) -> bytes:
    """A quoted string, or a literal when the value cannot be quoted."""
    b = _bytes(s)
    if len(b) > QUOTED_MAX or not _NEEDS_LITERAL.isdisjoint(b):
        return literal(b)
    return b'"' + b.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def astring(s: str | bytes) -> bytes:
    """An atom when the value is one (``INBOX``), else a quoted string or literal."""
    b = _bytes(s)
    if b and _ATOM_SPECIALS.isdisjoint(b) and b.isascii():
        return b
    return quoted(b)


def nstring(s: str | bytes | None) -> bytes:
    """``NIL`` for None, else :func:`quoted`."""
    return b"NIL" if s is None else quoted(s)


def flag_list(flags: Iterable[str]) -> bytes:
    """``(\\Seen $Junk)``: system flags in RFC order first, then keywords sorted (a stable
    order, so a client comparing responses sees no change where there was none)."""
    given = set(flags)
    system = [f for f in SYSTEM_FLAGS if f in given]
    rest = sorted(given.difference(system))
    return b"(" + b" ".join(_bytes(f) for f in [*system, *rest]) + b")"


def imap_date(epoch: float) -> bytes:
    """INTERNALDATE as a quoted date-time, ``"17-Jul-1996 02:44:25 -0700"``, in the
    server's local time zone with its offset at that instant (``+0000`` on a host set to
    UTC). Out-of-range values are clamped to the epoch."""
    try:
        dt = datetime.datetime.fromtimestamp(epoch).astimezone()
    except (OverflowError, OSError, ValueError):
        dt = datetime.datetime.fromtimestamp(0, datetime.UTC)
    off = dt.utcoffset() or datetime.timedelta(0)
    minutes = int(off.total_seconds()) // 60
    sign = b"+" if minutes >= 0 else b"-"
    minutes = abs(minutes)
    return b'"%2d-%b-%04d %02d:%02d:%02d %b%02d%02d"' % (
        dt.day,
        _MONTHS[dt.month - 1],
        dt.year,
        dt.hour,
        dt.minute,
        dt.second,
        sign,
        minutes // 60,
        minutes % 60,
    )


# -- modified UTF-7 (RFC 3501 5.1.3) -----------------------------------------------------


def _b64_mod(chunk: str) -> str:
    raw = chunk.encode("utf-16-be", "surrogatepass")
    return "&" + base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",") + "-"


def mutf7_encode(s: str) -> str:
    """A Unicode mailbox name in IMAP4rev1's modified UTF-7."""
    out: list[str] = []
    pending: list[str] = []
    for ch in s:
        if 0x20 <= ord(ch) <= 0x7E:
            if pending:
                out.append(_b64_mod("".join(pending)))
                pending = []
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    if pending:
        out.append(_b64_mod("".join(pending)))
    return "".join(out)


def mutf7_decode(s: str) -> str:
    """The Unicode name of a modified UTF-7 mailbox name; ValueError when ``s`` is not
    valid modified UTF-7 (8-bit or control characters, an unterminated or badly padded
    ``&...-`` run, a run that encodes printable ASCII or a bad UTF-16 sequence)."""
    out: list[str] = []
    i, n = 0, len(s)
    prev_was_b64 = False
    while i < n:
        ch = s[i]
        if not 0x20 <= ord(ch) <= 0x7E:
            raise ValueError("character outside printable US-ASCII in modified UTF-7")
        if ch != "&":
            out.append(ch)
            i += 1
            prev_was_b64 = False
            continue
        end = s.find("-", i + 1)
        if end < 0:
            raise ValueError("unterminated &... in modified UTF-7")
        run = s[i + 1 : end]
        i = end + 1
        if not run:
            out.append("&")
            prev_was_b64 = False
            continue
        if prev_was_b64:
            raise ValueError("two adjacent base64 runs in modified UTF-7")
        if len(run) % 4 == 1 or any(c not in _B64_CHARS for c in run):
            raise ValueError("bad base64 in modified UTF-7")
        padded = run.replace(",", "/") + "=" * (-len(run) % 4)
        try:
            raw = base64.b64decode(padded, validate=True)
        except binascii.Error as exc:
            raise ValueError("bad base64 in modified UTF-7") from exc
        if len(raw) % 2:
            raise ValueError("odd number of UTF-16 bytes in modified UTF-7")
        try:
            text = raw.decode("utf-16-be")
        except UnicodeDecodeError as exc:
            raise ValueError("bad UTF-16 in modified UTF-7") from exc
        if any(0x20 <= ord(c) <= 0x7E for c in text):
            raise ValueError("printable ASCII encoded in modified UTF-7")
        # The encoder writes the shortest form: a run whose leftover bits are not zero
        # was not written by one.
        if mutf7_encode(text) != "&" + run + "-":
            raise ValueError("non-canonical modified UTF-7")
        out.append(text)
        prev_was_b64 = True
    return "".join(out)


_B64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,")
