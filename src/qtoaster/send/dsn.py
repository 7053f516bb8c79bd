"""RFC 3464 delivery status notifications: the MIME alternative to QSBMF bounces (issue #6).

Pure, like :mod:`qtoaster.send.bounce` and with its envelope rules (VERP reduction,
double bounce to doublebounceto@doublebouncehost from ``#@[]``, triple bounce -> None).
The queue writes ``head + <original message, LF line ends> + tail``; the result is a
``multipart/report; report-type=delivery-status`` (RFC 6522) with three parts:

1. text/plain: qmail-send's own paragraphs and ``<addr>:`` blocks, so toaster users
   recognise the text (the "--- Below this line" separator is left out: part 3 is the copy);
2. message/delivery-status (RFC 3464 2.2/2.3): one block per failed recipient;
3. message/rfc822: ``Return-Path: <sender>`` (as QSBMF shows it), then the original.

The Subject stays qmail's ``failure notice``: filters and users of toasters key on it, and
RFC 3464 says nothing about the Subject.

Invariants: LF line ends throughout; header and delivery-status lines are printable US-ASCII
(RFC 3464 2.1.1; non-ASCII addresses become ``utf-8;`` xtext, RFC 6533 3) except To:,
which carries the sender as is (RFC 6532); every such line is at most 998 octets (RFC 5322
2.1.1); the text part is 7bit only when it is ASCII with short lines, else quoted-printable
(raw bytes kept); the boundary is random (uuid4) unless the caller gives one.
"""

from __future__ import annotations

import binascii
import ipaddress
import re
import uuid
from collections.abc import Iterable, Mapping

from qtoaster.core.dsn import orcpt_text, xtext_decode
from qtoaster.core.envelope import DOUBLE_BOUNCE_SENDER, Envelope, encode
from qtoaster.core.reply import Reply
from qtoaster.queue.format import date822
from qtoaster.send.bounce import (
    Bounce,
    BounceParams,
    quote,
    quote2,
    recipient_block,
    strip_verp,
)

_SOFT = 78  # RFC 5322 2.1.1: SHOULD fold before 78 characters
_HARD = 900  # a token longer than this is cut, keeping every line under the 998 MUST

_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,./:=?-]{0,69}[0-9A-Za-z'()+_,./:=?-]")  # RFC 2046 5.1.1
# qmail-remote's outsmtptext: the remote reply follows this, one line per reply line
_SAID = "Remote host said: "
_REPLY_LINE = re.compile(r"[2-5]\d\d(?:[ -]|$)")
# RFC 3463 2 / RFC 2034 4: the enhanced code after the reply code, same class
_REMOTE_ENHANCED = re.compile(r"([245])\d\d[ -]([245]\.\d{1,3}\.\d{1,3})(?:\s|$)")
# qmail-remote texts that name the host it talked to (spec 17.3)
_HOST_PATTERNS = (
    re.compile(r"^(?:TLS c|C)onnected to (\S+) but ", re.M),
    re.compile(
        r"^(\S+) (?:does not like recipient|failed on DATA command"
        r"|failed after I sent the message|accepted message)\.",
        re.M,
    ),
    re.compile(r"^Giving up on (\S+)\.", re.M),
)
_TOKEN = re.compile(r" +[^ ]+")  # a word with the spaces before it: folds go before those
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")


def build_dsn(
    sender: str,
    failures: Iterable[tuple[str, str]],
    params: BounceParams,
    now: float,
    *,
    reporting_mta: str,
    arrival: float,
    boundary: str | None = None,
    envid: str | None = None,
    orcpts: Mapping[str, str] | None = None,
) -> Bounce | None:
    """The DSN for ``failures`` (recipient, report), or None for a triple bounce.

    ``arrival`` is when the message entered the queue (RFC 3464 2.2.5 Arrival-Date);
    ``envid`` and ``orcpts`` (by recipient) are the RFC 3461 ENVID and ORCPT, as xtext.
    Raises ValueError for no failures (RFC 3464 2.1: at least one recipient block) or a
    boundary RFC 2046 does not allow.
    """
    failures = list(failures)
    if not failures:
        raise ValueError("a DSN needs at least one failed recipient")
    if boundary is None:
        boundary = f"qtoaster-dsn-{uuid.uuid4().hex}"
    elif not _BOUNDARY.fullmatch(boundary):
        raise ValueError(f"bad MIME boundary {boundary!r}")
    sender = strip_verp(sender)
    if sender == DOUBLE_BOUNCE_SENDER:
        return None
    envelope, why = _envelope(sender, params)
    delimiter = f"\n--{boundary}\n".encode()
    header = (
        f"Date: {date822(now)}\n"
        f"From: {quote(params.bouncefrom)}@{params.bouncehost}\n"
        f"To: {quote2(_no_controls(envelope.recipients[0]))}\n"
        "Subject: failure notice\n"
        "Auto-Submitted: auto-replied\n"  # RFC 3834 5: keeps vacation programs quiet
        "MIME-Version: 1.0\n"
        "Content-Type: multipart/report; report-type=delivery-status;\n"
        f'\tboundary="{boundary}"\n'
        "\n"
        f"--{boundary}\n"
    )
    human = f"Hi. This is the qmail-send program at {params.bouncehost}.\n" + why
    human += "".join(recipient_block(rcpt, report) for rcpt, report in failures)
    head = (
        encode(header)
        + _text_part(encode(human))
        + delimiter
        + _status_part(failures, reporting_mta, arrival, envid, orcpts or {})
        + delimiter
        + b"Content-Type: message/rfc822\n\n"
        + encode(f"Return-Path: <{quote2(_no_controls(sender))}>\n")
    )
    return Bounce(envelope, head, f"\n--{boundary}--\n".encode())


def _envelope(sender: str, params: BounceParams) -> tuple[Envelope, str]:
    """build_bounce's envelope and second paragraph: to the sender, or a double bounce."""
    if sender:
        why = (
            "I'm afraid I wasn't able to deliver your message to the following addresses.\n"
            "This is a permanent error; I've given up. Sorry it didn't work out.\n\n"
        )
        return Envelope("", (sender,)), why
    target = f"{params.doublebounceto}@{params.doublebouncehost}"
    why = "I tried to deliver a bounce message to this address, but the bounce bounced!\n\n"
    return Envelope(DOUBLE_BOUNCE_SENDER, (target,)), why


def _text_part(body: bytes) -> bytes:
    """Part 1: 7bit when it can be (RFC 2045 2.7), else quoted-printable of the raw bytes."""
    lines = body.split(b"\n")
    if body.isascii() and all(len(line) <= 998 and _is_text(line) for line in lines):
        return b"Content-Type: text/plain; charset=us-ascii\n\n" + body
    # RFC 2045 6.7 per line (istext=False so a stray CR is encoded, not passed through)
    encoded = b"\n".join(binascii.b2a_qp(line, quotetabs=False, istext=False) for line in lines)
    return (
        b"Content-Type: text/plain; charset=utf-8\n"
        b"Content-Transfer-Encoding: quoted-printable\n\n" + encoded
    )


def _is_text(line: bytes) -> bool:
    return all(byte == 9 or 32 <= byte < 127 for byte in line)


def _status_part(
    failures: list[tuple[str, str]],
    reporting_mta: str,
    arrival: float,
    envid: str | None = None,
    orcpts: Mapping[str, str] | None = None,
) -> bytes:
    """Part 2: the per-message fields, then one block per recipient (RFC 3464 2.1)."""
    blocks = [
        "Content-Type: message/delivery-status\n",
        message_fields(reporting_mta, arrival, envid),
    ]
    orcpts = orcpts or {}
    blocks += [
        original_recipient(orcpts.get(rcpt)) + _recipient_fields(rcpt, report)
        for rcpt, report in failures
    ]
    return "\n".join(blocks).encode("ascii")


def message_fields(reporting_mta: str, arrival: float, envid: str | None) -> str:
    """RFC 3464 2.2: Original-Envelope-Id (the ENVID, decoded), Reporting-MTA, Arrival-Date."""
    out = ""
    if envid is not None:
        out += _field("Original-Envelope-Id", _ascii_line(xtext_text(envid)))
    out += _field("Reporting-MTA", "dns; " + _ascii_line(reporting_mta))
    return out + f"Arrival-Date: {date822(arrival)}\n"


def original_recipient(orcpt: str | None) -> str:
    """RFC 3464 2.3.1: the ORCPT the client gave, or nothing."""
    return "" if orcpt is None else _field("Original-Recipient", orcpt_text(orcpt))


def address_field(address: str) -> str:
    """Final-Recipient's value (RFC 3464 2.3.2)."""
    return _address_field(address)


def _recipient_fields(recipient: str, report: str) -> str:
    """RFC 3464 2.3: Final-Recipient, Action, Status, Remote-MTA, Diagnostic-Code."""
    fields = _field("Final-Recipient", _address_field(recipient))
    fields += f"Action: failed\nStatus: {_status(report)}\n"
    host = _remote_host(report)
    if host:
        fields += _field("Remote-MTA", "dns; " + host)
    said = _remote_reply(report)
    if said:
        fields += _field("Diagnostic-Code", "smtp; " + _ascii_line(" ".join(said)))
    elif text := _ascii_line(report):
        # Not an SMTP reply: RFC 3464 2.3.6 wants the diagnostic-type to say what it is.
        fields += _field("Diagnostic-Code", "X-Qmail; " + text)
    return fields


def _status(report: str) -> str:
    """qmail's ``(#x.y.z)``, else the remote's RFC 3463 code, else 5.0.0."""
    qmail = Reply(0, report).enhanced_code  # "0.0.0" (class of code 0) when there is none
    if qmail != "0.0.0":
        return qmail
    said = _remote_reply(report)
    if said:
        found = _REMOTE_ENHANCED.match(said[-1])
        if found and found.group(1) == found.group(2)[0]:
            return found.group(2)
    return "5.0.0"


def _remote_reply(report: str) -> list[str]:
    """The reply lines after the last ``Remote host said:`` (qmail-remote), or []."""
    start = report.rfind(_SAID)
    if start < 0 or (start > 0 and report[start - 1] != "\n"):
        return []
    lines = report[start + len(_SAID) :].split("\n")
    said = [lines[0]]
    for line in lines[1:]:
        if not _REPLY_LINE.match(line):
            break
        said.append(line)
    return said if _REPLY_LINE.match(said[0]) else []


def _remote_host(report: str) -> str | None:
    """The MTA qmail-remote talked to, as an RFC 5321 domain or address literal."""
    for pattern in _HOST_PATTERNS:
        for found in pattern.finditer(report):
            name = found.group(1)
            try:
                ip = ipaddress.ip_address(name)
            except ValueError:
                if _HOSTNAME.fullmatch(name) and ".." not in name:
                    return name
                continue
            return f"[IPv6:{ip}]" if ip.version == 6 else f"[{ip}]"
    return None


def _address_field(address: str) -> str:
    """``rfc822; addr`` when it is printable ASCII, else ``utf-8;`` xtext (RFC 6533 3)."""
    quoted = quote2(address)
    if all(32 <= ord(ch) < 127 for ch in quoted):
        return "rfc822; " + quoted
    out = []
    for ch in address:
        point = ord(ch)
        if 0x21 <= point <= 0x7E and ch not in "\\+=":
            out.append(ch)
            continue
        # RFC 6533 HEXPOINT has no controls nor surrogates (surrogateescape'd bytes)
        if point < 0x20 or 0xD800 <= point <= 0xDFFF:
            point = 0xFFFD
        out.append(f"\\x{{{point:02X}}}")
    return "utf-8; " + "".join(out)


def _ascii_line(text: str) -> str:
    """One line of printable US-ASCII: controls become spaces, other non-ASCII ``?``."""
    chars = (ch if 32 <= ord(ch) < 127 else " " if ord(ch) < 128 else "?" for ch in text)
    return " ".join("".join(chars).split())


def _no_controls(address: str) -> str:
    """A header address cannot hold a line break; qmail's ``_`` for LF, for every control."""
    return "".join("_" if ord(ch) < 32 or ord(ch) == 127 else ch for ch in address)


def _field(name: str, value: str) -> str:
    """``Name: value`` folded before 78 columns where it can be (RFC 5322 2.2.3), LF-ended.

    A fold is a LF put before an existing space, so unfolding gives the value back.  Only a
    word or a run of spaces longer than ``_HARD`` (no real address or reply has one) is
    altered, to keep every line under the 998-octet MUST.
    """
    out = f"{name}:"
    width = len(out)
    first = True
    for token in _TOKEN.findall(" " + value.rstrip(" ")):
        for piece in (token[i : i + _HARD] for i in range(0, len(token), _HARD)):
            if not piece.strip():
                continue
            if not piece.startswith(" "):
                piece = " " + piece
            if width + len(piece) > _SOFT and not first:
                out += "\n"
                width = 0
            out += piece
            width += len(piece)
            first = False
    return out + "\n"


def xtext_text(xtext: str) -> str:
    """An xtext shown as text (RFC 3464 2.2.1 keeps the ENVID's decoded form)."""
    raw = xtext_decode(xtext) or b""
    return raw.decode("ascii", "replace")
