"""The SMTP server's legal states and transitions, in one table (after h11's ``_state.py``).

States (RFC 5321 3.3 mail transaction, with qmail's sequencing, spec 3.4-3.6):

    COMMAND --MailFrom 2xx--> MAIL --RcptTo 2xx--> RCPT --Data 3xx--> DATA --DataEnd--> COMMAND
       any command state --Helo/Rset 2xx--> COMMAND          Data 4xx/5xx --> COMMAND
       COMMAND --Auth 334--> AUTH --AuthLine 334--> AUTH --AuthLine other--> COMMAND
       any command state --StartTls 2xx--> TLS_PENDING --start_tls_done()--> COMMAND
       any state --Quit (any reply) or any 421--> CLOSED
    RCPT --Bdat 3xx--> CHUNK --(octets of a chunk but the last)--> BDAT --BDAT--> CHUNK ...
       CHUNK --DataEnd (after BDAT ... LAST)--> COMMAND        RCPT --Bdat 4xx/5xx--> COMMAND
       BDAT --Rset 2xx--> COMMAND

BDAT (RFC 3030) is a transaction open between two chunks: only BDAT, RSET, NOOP, VRFY,
HELP and QUIT are taken there (DATA gets 503 as RFC 3030 2 says, the others
``BDAT_EXPECTED``).  The end of a chunk that is not the last, the chunk octets of a refused
or out-of-sequence BDAT, and the BDATs after the first are the engine's own (no event).

AUTH is only entered from COMMAND: during a transaction qmail answers
``503 no auth during mail transaction (#5.5.0)`` (spec 6.2), so there an Auth event takes
4xx/5xx only.  The intermediate answer to Auth/AuthLine must be exactly 334 (RFC 4954 4).

The reply the driver sends decides the transition; the table maps (state, event type) to the
next state for each reply class.  A reply class missing from the table is a driver bug and
raises :class:`SmtpProtocolError`.  ``SEQUENCE_ERRORS`` lists the commands the engine answers
itself because they are out of order.

Invariant: every key of ``TRANSITIONS`` is an event type that the engine may emit in that
state; the engine emits no other (state, event) pair.
"""

from __future__ import annotations

import enum

from qtoaster.core.errors import ProtocolError
from qtoaster.core.reply import MAIL_FIRST, RCPT_FIRST, Reply
from qtoaster.protocols.smtp import events as ev


class State(enum.Enum):
    COMMAND = "command"  # no mail transaction
    MAIL = "mail"  # MAIL accepted, no recipient yet
    RCPT = "rcpt"  # at least one recipient accepted
    DATA = "data"  # message bytes flowing until CRLF.CRLF
    CHUNK = "chunk"  # the octets of a BDAT chunk flowing (RFC 3030 2)
    BDAT = "bdat"  # a BDAT transaction between two chunks: the next BDAT, or RSET
    AUTH = "auth"  # a 334 was sent: the next line is an AuthLine (RFC 4954 4)
    TLS_PENDING = "tls-pending"  # 220 to STARTTLS sent, handshake not yet done (RFC 3207 4)
    CLOSED = "closed"  # nothing more will be read or answered


class ReplyClass(enum.Enum):
    """The first digit of a reply code (RFC 5321 4.2.1), as the transition table reads it."""

    POSITIVE = "2xx"
    INTERMEDIATE = "3xx"
    NEGATIVE = "4xx/5xx"


class SmtpProtocolError(ProtocolError):
    """The driver used the engine wrongly (e.g. a 250 to DATA, or no reply to an event)."""


def reply_class_of(code: int) -> ReplyClass:
    if 200 <= code < 300:
        return ReplyClass.POSITIVE
    if 300 <= code < 400:
        return ReplyClass.INTERMEDIATE
    if 400 <= code < 600:
        return ReplyClass.NEGATIVE
    raise SmtpProtocolError(f"reply code {code} is not an SMTP reply code (RFC 5321 4.2)")


_COMMAND_STATES = (State.COMMAND, State.MAIL, State.RCPT)
_P, _I, _N = ReplyClass.POSITIVE, ReplyClass.INTERMEDIATE, ReplyClass.NEGATIVE


def _build() -> dict[tuple[State, type[ev.Event]], dict[ReplyClass, State]]:
    table: dict[tuple[State, type[ev.Event]], dict[ReplyClass, State]] = {}
    for state in _COMMAND_STATES:
        # HELO/EHLO and RSET cancel the transaction (RFC 5321 4.1.4; qmail spec 3.2).
        table[state, ev.Helo] = {_P: State.COMMAND, _N: state}
        table[state, ev.Rset] = {_P: State.COMMAND, _N: state}
        # A second MAIL starts a new transaction (qmail, spec 3.4; RFC 5321 would say 503).
        # A refused MAIL leaves any open transaction alone, as qmail's early returns do.
        table[state, ev.MailFrom] = {_P: State.MAIL, _N: state}
        for verb in (ev.Noop, ev.Vrfy, ev.Help):
            table[state, verb] = {_P: state, _N: state}
        table[state, ev.Quit] = {_P: State.CLOSED, _I: State.CLOSED, _N: State.CLOSED}
        table[state, ev.Auth] = {_N: state}
        # RFC 3207 4.2: after the handshake all prior state is discarded (start_tls_done).
        table[state, ev.StartTls] = {_P: State.TLS_PENDING, _N: state}
    # A 235/535/501... ends the exchange; the transaction state was COMMAND before it.
    table[State.COMMAND, ev.Auth] = {_P: State.COMMAND, _I: State.AUTH, _N: State.COMMAND}
    table[State.AUTH, ev.AuthLine] = {_P: State.COMMAND, _I: State.AUTH, _N: State.COMMAND}
    for state in (State.MAIL, State.RCPT):
        table[state, ev.RcptTo] = {_P: State.RCPT, _N: state}
    # qmail closes the transaction at DATA whatever the outcome (spec 3.6).
    table[State.RCPT, ev.Data] = {_I: State.DATA, _N: State.COMMAND}
    table[State.DATA, ev.DataEnd] = {_P: State.COMMAND, _N: State.COMMAND}
    # RFC 3030: the first BDAT is answered like DATA (3xx: the octets are the message).
    table[State.RCPT, ev.Bdat] = {_I: State.CHUNK, _N: State.COMMAND}
    table[State.CHUNK, ev.DataEnd] = {_P: State.COMMAND, _N: State.COMMAND}
    table[State.BDAT, ev.Rset] = {_P: State.COMMAND, _N: State.BDAT}
    for verb in (ev.Noop, ev.Vrfy, ev.Help):
        table[State.BDAT, verb] = {_P: State.BDAT, _N: State.BDAT}
    table[State.BDAT, ev.Quit] = {_P: State.CLOSED, _I: State.CLOSED, _N: State.CLOSED}
    return table


TRANSITIONS = _build()

SEQUENCE_ERRORS: dict[tuple[State, type[ev.Event]], Reply] = {
    (State.COMMAND, ev.RcptTo): MAIL_FIRST,
    (State.COMMAND, ev.Data): MAIL_FIRST,
    (State.MAIL, ev.Data): RCPT_FIRST,
    (State.COMMAND, ev.Bdat): MAIL_FIRST,
    (State.MAIL, ev.Bdat): RCPT_FIRST,
}
"""Commands the engine answers by itself in these states (qmail-smtpd.c smtp_rcpt/smtp_data)."""


def next_state(state: State, event_type: type[ev.Event], code: int) -> State:
    """The state after answering an event of ``event_type`` with reply ``code``.

    A 421 closes the session from any state (RFC 5321 3.8).
    """
    outcomes = TRANSITIONS.get((state, event_type))
    if outcomes is None:
        raise SmtpProtocolError(f"{event_type.__name__} cannot be answered in state {state}")
    if code == 421:
        return State.CLOSED
    outcome = reply_class_of(code)
    target = outcomes.get(outcome)
    if target is State.AUTH and code != 334:
        target = None  # only 334 carries a SASL challenge (RFC 4954 4)
    if target is None:
        raise SmtpProtocolError(f"a {code} reply is not valid for {event_type.__name__}")
    return target
