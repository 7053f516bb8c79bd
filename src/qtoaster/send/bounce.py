"""The bounce (QSBMF) and double-bounce messages of qmail-send (spec 15.4).

Pure: given the failed recipients and their reports, the original envelope sender
and the controls, build the bounce's envelope and the text that precedes the copy of
the original message.  Byte for byte qmail-send.c ``addbounce``/``injectbounce``.

Invariants: a recipient block never contains an empty line (qmail turns the second
LF of a pair into ``/``); a failed double bounce (sender ``#@[]``) gives no bounce
at all ("triple bounce: discarding").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from qtoaster.core.envelope import DOUBLE_BOUNCE_SENDER, Envelope, encode
from qtoaster.queue.format import date822

# quote.c: the bytes that may stand unquoted in a local part
_ATOM = frozenset(
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-./=?^_`{|}~"
)


@dataclass(frozen=True, slots=True)
class BounceParams:
    bouncefrom: str  # control/bouncefrom, default MAILER-DAEMON
    bouncehost: str  # control/bouncehost, default me
    doublebounceto: str  # control/doublebounceto, default postmaster
    doublebouncehost: str  # control/doublebouncehost, default me


@dataclass(frozen=True, slots=True)
class Bounce:
    envelope: Envelope
    head: bytes  # header, explanation, recipient blocks, separator, Return-Path line
    tail: bytes = b""  # after the copy of the message (a DSN's closing boundary)


def quote(local: str) -> str:
    """quote.c ``quote``: quote a local part only when RFC 822 needs it."""
    raw = encode(local)
    needs = (
        not raw
        or any(b not in _ATOM for b in raw)
        or raw.startswith(b".")
        or raw.endswith(b".")
        or b".." in raw
    )
    if not needs:
        return local
    escaped = "".join("\\" + ch if ch in '\r\n"\\' else ch for ch in local)
    return f'"{escaped}"'


def quote2(address: str) -> str:
    """quote.c ``quote2``: quote the part before the last ``@``; ``""`` stays empty."""
    if not address:
        return address
    local, at, domain = address.rpartition("@")
    if not at:
        return quote(address)
    return quote(local) + "@" + domain


def recipient_block(recipient: str, report: str) -> str:
    """One ``<addr>:`` block of bounce/N (qmail-send.c ``addbounce``)."""
    text = "<" + recipient.replace("\n", "_") + ">:\n" + report
    if report and not report.endswith("\n"):
        text += "\n"
    chars = list(text)
    for pos in range(len(chars) - 2, 0, -1):
        if chars[pos] == "\n" and chars[pos - 1] == "\n":
            chars[pos] = "/"
    return "".join(chars) + "\n"


def strip_verp(sender: str) -> str:
    """``owner-@host-@[]`` -> ``owner-@host`` (qmail-send.c injectbounce)."""
    if sender.endswith("-@[]"):
        return sender[:-4]
    return sender


def build_bounce(
    sender: str,
    failures: Iterable[tuple[str, str]],
    params: BounceParams,
    now: float,
) -> Bounce | None:
    """The bounce for ``failures`` (recipient, report), or None for a triple bounce."""
    sender = strip_verp(sender)
    if sender == DOUBLE_BOUNCE_SENDER:
        return None
    if sender:
        envelope = Envelope("", (sender,))
        why = (
            "I'm afraid I wasn't able to deliver your message to the following addresses.\n"
            "This is a permanent error; I've given up. Sorry it didn't work out.\n\n"
        )
        separator = "--- Below this line is a copy of the message.\n\n"
    else:
        target = f"{params.doublebounceto}@{params.doublebouncehost}"
        envelope = Envelope(DOUBLE_BOUNCE_SENDER, (target,))
        why = "I tried to deliver a bounce message to this address, but the bounce bounced!\n\n"
        separator = "--- Below this line is the original bounce.\n\n"
    text = (
        f"Date: {date822(now)}\n"
        f"From: {quote(params.bouncefrom)}@{params.bouncehost}\n"
        f"To: {quote2(envelope.recipients[0])}\n"
        "Subject: failure notice\n\n"
        f"Hi. This is the qmail-send program at {params.bouncehost}.\n"
        + why
        + "".join(recipient_block(rcpt, report) for rcpt, report in failures)
        + separator
        + f"Return-Path: <{quote2(sender)}>\n"
    )
    return Bounce(envelope, encode(text))
