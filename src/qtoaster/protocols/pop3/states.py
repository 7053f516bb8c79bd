"""The POP3 server's legal states and transitions, in one table (after h11's ``_state.py``).

States (RFC 1939 3, with qmail-popup/qmail-pop3d's command sets, spec 19.2 and 19.5):

    AUTHORIZATION --Auth/AuthLine challenge--> AUTH_EXCHANGE --AuthLine challenge--> same
    AUTH_EXCHANGE --AuthLine -ERR--> AUTHORIZATION
    AUTHORIZATION/AUTH_EXCHANGE --login event +OK and logged_in()--> TRANSACTION
    AUTHORIZATION --Stls +OK--> TLS_PENDING --start_tls_done()--> AUTHORIZATION
    any state --Quit (any answer), close(), a reply after close_after_send()--> CLOSED

RFC 1939's UPDATE state is the driver's work between a Quit event and its answer.

The kind of the driver's answer (+OK, -ERR, a ``+ `` challenge, a multiline +OK) decides
the transition; the table maps (state, event type) to the next state for each kind it
allows.  A kind missing from the table is a driver bug and raises
:class:`Pop3ProtocolError` (e.g. a challenge to LIST, a multiline answer to DELE).

Invariant: every key of ``TRANSITIONS`` is a (state, event type) pair the engine may emit,
and the engine emits no other.
"""

from __future__ import annotations

import enum

from qtoaster.core.errors import ProtocolError
from qtoaster.protocols.pop3 import events as ev


class State(enum.Enum):
    AUTHORIZATION = "authorization"  # qmail-popup's part (RFC 1939 4)
    AUTH_EXCHANGE = "auth-exchange"  # a "+ " was sent: the next line is an AuthLine
    TLS_PENDING = "tls-pending"  # +OK to STLS sent, handshake not done (RFC 2595 4)
    TRANSACTION = "transaction"  # qmail-pop3d's part (RFC 1939 5)
    CLOSED = "closed"  # nothing more will be read or answered

    # Every answer looks up TRANSITIONS: Enum's own __hash__ is Python code (it hashes the
    # name); members are singletons compared by identity, so the identity hash is the same
    # contract at C speed.
    __hash__ = object.__hash__


class Answer(enum.Enum):
    OK = "+OK"
    ERR = "-ERR"
    CHALLENGE = "+ "
    MULTILINE = "+OK multiline"

    __hash__ = object.__hash__  # as State's


class Pop3ProtocolError(ProtocolError):
    """The driver used the engine wrongly (e.g. no answer to an event, +OK to a challenge)."""


_A, _T, _X = State.AUTHORIZATION, State.TRANSACTION, State.AUTH_EXCHANGE
_OK, _ERR, _CH, _ML = Answer.OK, Answer.ERR, Answer.CHALLENGE, Answer.MULTILINE
_ANY_CLOSES = {_OK: State.CLOSED, _ERR: State.CLOSED}


def _build() -> dict[tuple[State, type[ev.Event]], dict[Answer, State]]:
    table: dict[tuple[State, type[ev.Event]], dict[Answer, State]] = {
        (_A, ev.User): {_OK: _A, _ERR: _A},
        # +OK to a login is only legal with logged_in() (server.py enforces it).
        (_A, ev.Pass): {_OK: _T, _ERR: _A},
        (_A, ev.Apop): {_OK: _T, _ERR: _A},
        # A bare AUTH may be answered with the mechanism list (RFC 1734 clients probe so).
        (_A, ev.Auth): {_OK: _T, _ERR: _A, _CH: _X, _ML: _A},
        (_X, ev.AuthLine): {_OK: _T, _ERR: _A, _CH: _X},
        (_A, ev.Capa): {_ML: _A, _ERR: _A},
        (_A, ev.Stls): {_OK: State.TLS_PENDING, _ERR: _A},
        (_A, ev.Quit): _ANY_CLOSES,
        (_T, ev.Capa): {_ML: _T, _ERR: _T},
        (_T, ev.Quit): _ANY_CLOSES,
    }
    for single in (ev.Stat, ev.Dele, ev.Noop, ev.Rset, ev.Last):
        table[_T, single] = {_OK: _T, _ERR: _T}
    for listing in (ev.List, ev.Uidl):
        table[_T, listing] = {_OK: _T, _ML: _T, _ERR: _T}
    for message in (ev.Retr, ev.Top):
        table[_T, message] = {_ML: _T, _ERR: _T}
    return table


TRANSITIONS = _build()


def next_state(state: State, event_type: type[ev.Event], answer: Answer) -> State:
    """The state after answering an event of ``event_type`` with an answer of kind ``answer``."""
    outcomes = TRANSITIONS.get((state, event_type))
    if outcomes is None:
        raise Pop3ProtocolError(f"{event_type.__name__} cannot be answered in state {state}")
    target = outcomes.get(answer)
    if target is None:
        raise Pop3ProtocolError(f"{answer.value} is not a valid answer to {event_type.__name__}")
    return target
