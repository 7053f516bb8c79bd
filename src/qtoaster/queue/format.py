"""The on-disk format of one queued message, and qmail-queue's envelope grammar.

A message file (``queue/mess/ID``, see docs/queue.md) is::

    QTQ1 <birth, float seconds> <origin>\\n
    +M RET=HDRS ENVID=<xtext>\\n                 optional: the DSN parameters (RFC 3461)
    +R <idx> NOTIFY=<list> ORCPT=<type;xtext>\\n  of MAIL and of recipient idx, if any
    F<sender>\\0T<rcpt1>\\0T<rcpt2>\\0...\\0      qmail-queue(8)'s envelope, ends with \\0\\0
    <message bytes, LF line endings>

The origin is free text (``smtp IP``, ...); smtpd may add flag words after the IP
(``smtp 192.0.2.1 requiretls``: `with_flags`, read back by `origin_flags`).

Invariants: the header line never contains a second LF (the origin is sanitised);
the envelope obeys qmail-queue's grammar ``F...\\0(T...\\0)*\\0`` with every address
shorter than 1000 bytes; the message bytes start at ``body_offset`` and run to EOF.
The ``+`` lines are written only for a message that had DSN parameters, so files written
before they existed (and every message without DSN) read the same; their values are
printable ASCII without spaces (:mod:`qtoaster.core.dsn`), so a line never breaks.
Also here: qmail's RFC 822 date (date822fmt.c) and qmail-queue's own Received line,
because both are part of what the queue writes into messages.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import BinaryIO

from qtoaster.core import dsn as dsnp
from qtoaster.core.dsn import NO_DSN, EnvelopeDsn, MailDsn, RcptDsn
from qtoaster.core.envelope import Envelope, decode, encode
from qtoaster.core.errors import FormatError

MAGIC = b"QTQ1"
MAX_ADDRESS = 1000  # qmail-queue exits 11 for an address this long or longer
MAX_HEADER_LINE = 4096
MAX_ENVELOPE = 64 * 1024 * 1024  # a larger envelope can only be a corrupt file
_CHUNK = 65536
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class BadQueueFile(FormatError):
    """A queue entry that cannot be parsed; it is moved to ``bad/``, never retried."""


class EnvelopeError(FormatError):
    """The envelope breaks qmail-queue's grammar; ``code`` is its exit code (11 or 91)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Header:
    birth: float
    origin: str
    envelope: Envelope
    body_offset: int
    dsn: EnvelopeDsn = NO_DSN


def scan_envelope(raw: bytes) -> tuple[Envelope, int] | None:
    """Parse ``F..\\0(T..\\0)*\\0`` at the start of ``raw``.

    Returns the envelope and the number of bytes it used, or None when ``raw`` is a
    valid but incomplete prefix.  Raises EnvelopeError(91) for a grammar error and
    EnvelopeError(11) for an address of MAX_ADDRESS bytes or more (qmail-queue.c).
    """
    sender: str | None = None
    recipients: list[str] = []
    pos = 0
    while pos < len(raw):
        letter = raw[pos]
        if sender is not None and letter == 0:
            return Envelope(sender, tuple(recipients)), pos + 1
        if letter != (ord("F") if sender is None else ord("T")):
            raise EnvelopeError(91, f"bad envelope record at byte {pos}")
        end = raw.find(b"\0", pos + 1)
        length = (len(raw) if end < 0 else end) - pos - 1
        if length >= MAX_ADDRESS:
            raise EnvelopeError(11, "envelope address too long")
        if end < 0:
            return None
        address = decode(raw[pos + 1 : end])
        if sender is None:
            sender = address
        else:
            recipients.append(address)
        pos = end + 1
    return None


def parse_envelope(raw: bytes) -> Envelope:
    """A complete envelope and nothing else; EnvelopeError(91) if incomplete or trailing."""
    scanned = scan_envelope(raw)
    if scanned is None or scanned[1] != len(raw):
        raise EnvelopeError(91, "envelope incomplete or followed by garbage")
    return scanned[0]


def encode_header(
    birth: float, origin: str, envelope: Envelope, dsn: EnvelopeDsn = NO_DSN
) -> bytes:
    """The header line and the envelope, ready to be followed by the message bytes."""
    for address in (envelope.sender, *envelope.recipients):
        raw = encode(address)
        if b"\0" in raw or len(raw) >= MAX_ADDRESS:
            raise EnvelopeError(11 if len(raw) >= MAX_ADDRESS else 91, "bad address")
    clean = origin.replace("\r", " ").replace("\n", " ")
    line = b"%s %s %s\n" % (MAGIC, repr(float(birth)).encode(), encode(clean))
    return line + encode_dsn(dsn, len(envelope.recipients)) + envelope.to_qmail()


def encode_dsn(dsn: EnvelopeDsn, recipients: int) -> bytes:
    """The ``+M``/``+R`` lines (none for a message without DSN parameters)."""
    lines = []
    mail = dsnp.mail_words(dsn.mail)
    if mail:
        lines.append("+M " + " ".join(mail) + "\n")
    for idx, rcpt in sorted((dsn.rcpts or {}).items()):
        if not 0 <= idx < recipients or rcpt.empty:
            continue
        lines.append(f"+R {idx} " + " ".join(dsnp.rcpt_words(rcpt)) + "\n")
    text = "".join(lines)
    if not text.isascii() or "\r" in text or any(len(line) > MAX_HEADER_LINE for line in lines):
        raise EnvelopeError(91, "bad DSN parameter")
    return text.encode("ascii")


def parse_dsn_lines(lines: list[bytes]) -> EnvelopeDsn:
    """The ``+M``/``+R`` lines read back; BadQueueFile for one that is malformed."""
    mail = dsnp.NO_MAIL_DSN
    rcpts: dict[int, RcptDsn] = {}
    for raw in lines:
        words = decode(raw).rstrip("\n").split(" ")
        params = dsnp.params_of(words[2 if words[0] == "+R" else 1 :])
        if words[0] == "+M":
            parsed_mail = dsnp.mail_dsn(params)
            if not isinstance(parsed_mail, MailDsn):
                raise BadQueueFile("bad DSN line")
            mail = parsed_mail
        elif words[0] == "+R" and len(words) > 1 and words[1].isdigit():
            parsed = dsnp.rcpt_dsn(params)
            if not isinstance(parsed, RcptDsn):
                raise BadQueueFile("bad DSN line")
            rcpts[int(words[1])] = parsed
        else:
            raise BadQueueFile("bad DSN line")
    return EnvelopeDsn(mail, rcpts or None)


def read_header(stream: BinaryIO) -> Header:
    """Read the header line and envelope from the start of ``stream``; BadQueueFile if bad."""
    line = stream.readline(MAX_HEADER_LINE)
    if not line.endswith(b"\n"):
        raise BadQueueFile("header line missing or too long")
    parts = line[:-1].split(b" ", 2)
    if len(parts) != 3 or parts[0] != MAGIC:
        raise BadQueueFile("not a QTQ1 queue file")
    try:
        birth = float(parts[1])
    except ValueError:
        raise BadQueueFile("bad birth time") from None
    if not math.isfinite(birth):
        raise BadQueueFile("bad birth time")
    dsn_lines: list[bytes] = []
    raw = stream.readline(MAX_HEADER_LINE + 1)
    while raw.startswith(b"+"):
        if not raw.endswith(b"\n") or len(dsn_lines) > MAX_ENVELOPE // 16:
            raise BadQueueFile("DSN line truncated or too long")
        dsn_lines.append(raw)
        raw = stream.readline(MAX_HEADER_LINE + 1)
    dsn = parse_dsn_lines(dsn_lines)
    extra = sum(map(len, dsn_lines))
    while True:
        try:
            scanned = scan_envelope(raw)
        except EnvelopeError as exc:
            raise BadQueueFile(f"bad envelope: {exc}") from None
        if scanned is not None:
            envelope, used = scanned
            return Header(birth, decode(parts[2]), envelope, len(line) + extra + used, dsn)
        chunk = stream.read(_CHUNK)
        if not chunk or len(raw) > MAX_ENVELOPE:
            raise BadQueueFile("envelope truncated")
        raw += chunk


def date822(when: float) -> str:
    """qmail's date822fmt: ``14 Nov 2023 22:13:20 -0000`` (always UTC, day not padded)."""
    t = time.gmtime(when)
    return (
        f"{t.tm_mday} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} -0000"
    )


def received_line(how: str, pid: int, when: float) -> bytes:
    """qmail-queue's own trace line (spec 14.2 step 4), e.g. ``invoked by uid 1000``."""
    return f"Received: (qmail {pid} invoked {how}); {date822(when)}\n".encode()
