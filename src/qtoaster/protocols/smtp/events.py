"""The events the sans-IO SMTP server engine hands to its driver.

One class per client action (RFC 5321 4.1.1 verbs) plus the DATA stream pieces and end of
input.  Events are immutable values; strings are decoded from the wire with utf-8
surrogateescape, so every byte the client sent is recoverable.

Which events expect a reply (``ServerConnection.send``) is part of the contract:

- reply expected: Helo, MailFrom, RcptTo, Data, DataEnd, Rset, Noop, Vrfy, Help, Quit;
- no reply: DataChunk, DataAborted (the engine already queued the 451), ConnectionClosed.
"""

from __future__ import annotations

from dataclasses import dataclass

from qtoaster.core.reply import Reply


@dataclass(frozen=True, slots=True)
class Helo:
    """HELO (``extended=False``) or EHLO; a 2xx answer also resets the transaction."""

    name: str
    extended: bool


@dataclass(frozen=True, slots=True)
class MailFrom:
    """MAIL; ``address`` is ``""`` for the null sender.  Keys of ``params`` are upper-case."""

    address: str
    params: dict[str, str | None]
    size: int | None
    body: str | None


@dataclass(frozen=True, slots=True)
class RcptTo:
    address: str
    params: dict[str, str | None]


@dataclass(frozen=True, slots=True)
class Data:
    """DATA with an open transaction and at least one accepted recipient.

    Answer 354 to receive the message; any other answer keeps command mode.  Either way the
    transaction is over (qmail resets it at DATA, spec 3.6).
    """


@dataclass(frozen=True, slots=True)
class DataChunk:
    """Message bytes: CRLF turned into LF, dot-stuffing undone.  May end mid-line."""

    data: bytes


@dataclass(frozen=True, slots=True)
class DataEnd:
    """The final ``CRLF.CRLF``; ``hops`` counts Received/Delivered header lines (spec 3.6)."""

    hops: int


@dataclass(frozen=True, slots=True)
class DataAborted:
    """A bare LF inside DATA: ``reply`` is already queued and the connection is closed."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class Rset:
    pass


@dataclass(frozen=True, slots=True)
class Noop:
    pass


@dataclass(frozen=True, slots=True)
class Vrfy:
    argument: str


@dataclass(frozen=True, slots=True)
class Help:
    pass


@dataclass(frozen=True, slots=True)
class Quit:
    pass


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The client closed its side (EOF).  Emitted once; afterwards the engine is closed."""


Event = (
    Helo
    | MailFrom
    | RcptTo
    | Data
    | DataChunk
    | DataEnd
    | DataAborted
    | Rset
    | Noop
    | Vrfy
    | Help
    | Quit
    | ConnectionClosed
)

REPLY_EXPECTED: tuple[type[Event], ...] = (
    Helo,
    MailFrom,
    RcptTo,
    Data,
    DataEnd,
    Rset,
    Noop,
    Vrfy,
    Help,
    Quit,
)
"""Event types the driver must answer with ``send`` before asking for the next event."""
