"""The events the sans-IO SMTP server engine hands to its driver.

One class per client action (RFC 5321 4.1.1 verbs, RFC 4954 AUTH, RFC 3207 STARTTLS) plus
the DATA stream pieces, the lines of an AUTH exchange and end of input.  Events are immutable
values; strings are decoded from the wire with utf-8 surrogateescape, so every byte the client
sent is recoverable.

Which events expect a reply (``ServerConnection.send``) is part of the contract:

- reply expected: Helo, MailFrom, RcptTo, Data, Bdat, DataEnd, Rset, Noop, Vrfy, Help, Quit,
  Auth, AuthLine, StartTls;
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
class Bdat:
    """The first ``BDAT`` of a transaction (RFC 3030), with at least one accepted recipient.

    Answer it as Data: 354 opens the message (nothing is sent: RFC 3030 has no intermediate
    reply; the chunk's octets follow as DataChunk, and the engine answers each chunk but the
    last itself with ``250 <n> octets received``; the last ends with DataEnd).  A 4xx/5xx
    refuses the message: the engine reads and drops the chunk's octets and only then sends
    that reply (RFC 3030 2), and later BDATs get 503.
    """

    size: int
    last: bool


@dataclass(frozen=True, slots=True)
class DataChunk:
    """Message bytes: CRLF turned into LF, dot-stuffing undone (DATA), or a BDAT chunk's
    octets with every line end as LF (protocols/smtp/chunking.py).  May end mid-line."""

    data: bytes


@dataclass(frozen=True, slots=True)
class DataEnd:
    """The final ``CRLF.CRLF``, or the end of ``BDAT ... LAST``; ``hops`` counts
    Received/Delivered header lines (spec 3.6).  Answered as the end of DATA."""

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
class Auth:
    """AUTH (RFC 4954 4): ``AUTH PLAIN dGVzdA==`` is ``Auth("PLAIN", "dGVzdA==")``.

    ``mechanism`` is ASCII upper-cased and ``""`` when the client named none (qmail's auth
    patch treats that as an unknown mechanism: 504, after its 503 preconditions).
    ``initial_response`` is the text after the mechanism and its spaces, as sent (``"="`` is
    RFC 4954's empty response), or None if there is none.  A 334 answer makes the next client
    line an :class:`AuthLine`; any other answer ends the exchange.
    """

    mechanism: str
    initial_response: str | None


@dataclass(frozen=True, slots=True)
class AuthLine:
    """One client line of an AUTH exchange, after a 334: CR stripped, never parsed as a command.

    ``*`` arrives as is: the driver answers ``501 auth exchange canceled (#5.0.0)`` (spec 6.2).
    Answer 334 for one more line, anything else ends the exchange.
    """

    data: str


@dataclass(frozen=True, slots=True)
class StartTls:
    """STARTTLS without parameters, not yet in TLS (RFC 3207 4).

    A 2xx answer (``220 ready for tls``) drops all buffered input and suspends the engine
    until :meth:`ServerConnection.start_tls_done`; 454/502 keep the session in clear text.
    """


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The client closed its side (EOF).  Emitted once; afterwards the engine is closed."""


Event = (
    Helo
    | MailFrom
    | RcptTo
    | Data
    | Bdat
    | DataChunk
    | DataEnd
    | DataAborted
    | Rset
    | Noop
    | Vrfy
    | Help
    | Quit
    | Auth
    | AuthLine
    | StartTls
    | ConnectionClosed
)

REPLY_EXPECTED: tuple[type[Event], ...] = (
    Helo,
    MailFrom,
    RcptTo,
    Data,
    Bdat,
    DataEnd,
    Rset,
    Noop,
    Vrfy,
    Help,
    Quit,
    Auth,
    AuthLine,
    StartTls,
)
"""Event types the driver must answer with ``send`` before asking for the next event."""
