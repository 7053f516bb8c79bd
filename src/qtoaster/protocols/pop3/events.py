"""The events the sans-IO POP3 server engine hands to its driver.

One class per client command the driver must answer (RFC 1939 sections 4-7, RFC 2449 CAPA,
RFC 2595 STLS, RFC 5034 AUTH), the lines of an AUTH exchange, and end of input.  Events are
immutable values; strings are decoded from the wire with utf-8 surrogateescape, so every byte
the client sent is recoverable.

Every event but :class:`ConnectionClosed` expects exactly one answer (``ok``, ``err``,
``challenge``, ``logged_in`` or a multiline reply) before the next ``next_event``.  Message
numbers are already checked by the engine: an integer >= 1 (qmail-pop3d's ``msgno``: not a
number is ``-ERR syntax error``, 0 is ``-ERR messages are counted from 1``).  Whether the
message exists or is deleted is the driver's (it owns the mailbox, spec 19.5).
"""

from __future__ import annotations

from dataclasses import dataclass

# -- AUTHORIZATION state (qmail-popup, spec 19.2) ------------------------------------------


@dataclass(frozen=True, slots=True)
class User:
    """USER name (non-empty).  A +OK makes the name the one a following PASS is for."""

    name: str


@dataclass(frozen=True, slots=True)
class Pass:
    """PASS after a USER answered +OK; the user name is ``Pop3Connection.user``.

    The password is the argument as sent after the spaces that follow the verb (qmail-popup;
    RFC 1939 7 allows spaces in it).  A login event: see ``Pop3Connection.logged_in``.
    """

    password: str


@dataclass(frozen=True, slots=True)
class Apop:
    """APOP name digest (RFC 1939 7): split at the first space, the digest as sent."""

    name: str
    digest: str


@dataclass(frozen=True, slots=True)
class Auth:
    """AUTH mechanism [initial-response] (RFC 5034 4, RFC 1734).

    ``mechanism`` is ASCII upper-cased, ``""`` for a bare ``AUTH`` (the driver may list its
    mechanisms in a multiline +OK, as RFC 1734 clients probe, or refuse).  A ``challenge``
    answer makes the next client line an :class:`AuthLine`.
    """

    mechanism: str
    initial_response: str | None


@dataclass(frozen=True, slots=True)
class AuthLine:
    """One client line after a ``+ `` challenge: CR stripped, never parsed as a command.

    ``*`` arrives as is: it cancels the exchange (RFC 5034 4); the driver answers -ERR.
    """

    data: str


@dataclass(frozen=True, slots=True)
class Capa:
    """CAPA (RFC 2449 5), in either state: answer with a multiline reply."""


@dataclass(frozen=True, slots=True)
class Stls:
    """STLS (RFC 2595 4), in AUTHORIZATION, not yet in TLS.

    A +OK suspends the engine (TLS_PENDING) until ``start_tls_done``; buffered input is
    dropped.  -ERR keeps the session in clear text.
    """


@dataclass(frozen=True, slots=True)
class Quit:
    """QUIT in either state: whatever the answer, the engine is closed after it.

    In TRANSACTION the driver enters the UPDATE state (RFC 1939 6) before answering.
    """


# -- TRANSACTION state (qmail-pop3d, spec 19.5) --------------------------------------------


@dataclass(frozen=True, slots=True)
class Stat:
    pass


@dataclass(frozen=True, slots=True)
class List:
    """LIST [n]: None lists all (multiline), a number lists one (single line)."""

    number: int | None


@dataclass(frozen=True, slots=True)
class Uidl:
    """UIDL [n] (RFC 1939 7): as List."""

    number: int | None


@dataclass(frozen=True, slots=True)
class Retr:
    """RETR n: answer ``send_multiline_start`` + chunks + ``send_multiline_end``, or -ERR."""

    number: int


@dataclass(frozen=True, slots=True)
class Top:
    """TOP n k (RFC 1939 7): header, blank line, ``lines`` body lines.

    ``lines`` is None when k is missing or not a number: qmail-pop3d then sends the whole
    message (spec 19.5).
    """

    number: int
    lines: int | None


@dataclass(frozen=True, slots=True)
class Dele:
    number: int


@dataclass(frozen=True, slots=True)
class Noop:
    """NOOP in TRANSACTION (in AUTHORIZATION the engine answers ``+OK `` itself)."""


@dataclass(frozen=True, slots=True)
class Rset:
    pass


@dataclass(frozen=True, slots=True)
class Last:
    """LAST (RFC 1460; qmail-pop3d keeps it): ``+OK <highest number deleted>``."""


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The client closed its side (EOF).  Emitted once; no answer; the engine is closed."""


Event = (
    User
    | Pass
    | Apop
    | Auth
    | AuthLine
    | Capa
    | Stls
    | Quit
    | Stat
    | List
    | Uidl
    | Retr
    | Top
    | Dele
    | Noop
    | Rset
    | Last
    | ConnectionClosed
)

LOGIN_EVENTS: tuple[type[Event], ...] = (Pass, Apop, Auth, AuthLine)
"""Events a successful authentication answers (with ``logged_in``)."""
