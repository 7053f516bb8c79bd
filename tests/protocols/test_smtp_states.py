"""The transition table (states.py)."""

from __future__ import annotations

import pytest

from qtoaster.protocols.smtp import events as ev
from qtoaster.protocols.smtp.states import (
    SEQUENCE_ERRORS,
    TRANSITIONS,
    ReplyClass,
    SmtpProtocolError,
    State,
    next_state,
    reply_class_of,
)

COMMAND_STATES = (State.COMMAND, State.MAIL, State.RCPT)


@pytest.mark.parametrize("state", COMMAND_STATES)
def test_session_commands_in_every_command_state(state: State) -> None:
    assert next_state(state, ev.Helo, 250) is State.COMMAND
    assert next_state(state, ev.Rset, 250) is State.COMMAND
    assert next_state(state, ev.MailFrom, 250) is State.MAIL
    assert next_state(state, ev.MailFrom, 552) is state
    assert next_state(state, ev.Noop, 250) is state
    assert next_state(state, ev.Quit, 221) is State.CLOSED
    assert next_state(state, ev.Vrfy, 421) is State.CLOSED


def test_transaction_path() -> None:
    assert next_state(State.MAIL, ev.RcptTo, 250) is State.RCPT
    assert next_state(State.MAIL, ev.RcptTo, 553) is State.MAIL
    assert next_state(State.RCPT, ev.RcptTo, 550) is State.RCPT
    assert next_state(State.RCPT, ev.Data, 354) is State.DATA
    assert next_state(State.RCPT, ev.Data, 451) is State.COMMAND
    assert next_state(State.DATA, ev.DataEnd, 250) is State.COMMAND
    assert next_state(State.DATA, ev.DataEnd, 554) is State.COMMAND


@pytest.mark.parametrize(
    ("state", "event", "code"),
    [
        (State.RCPT, ev.Data, 250),
        (State.DATA, ev.DataEnd, 354),
        (State.COMMAND, ev.RcptTo, 250),
        (State.MAIL, ev.Data, 354),
        (State.COMMAND, ev.Noop, 354),
        (State.DATA, ev.Noop, 250),
        (State.CLOSED, ev.Quit, 221),
        (State.COMMAND, ev.DataChunk, 250),
        (State.COMMAND, ev.Noop, 600),
    ],
)
def test_illegal_answers(state: State, event: type[ev.Event], code: int) -> None:
    with pytest.raises(SmtpProtocolError):
        next_state(state, event, code)


def test_sequence_errors_are_exactly_the_missing_pairs() -> None:
    for state in COMMAND_STATES:
        for event in (ev.RcptTo, ev.Data):
            assert ((state, event) in TRANSITIONS) != ((state, event) in SEQUENCE_ERRORS)


def test_outcome_classes() -> None:
    assert reply_class_of(250) is ReplyClass.POSITIVE
    assert reply_class_of(354) is ReplyClass.INTERMEDIATE
    assert reply_class_of(451) is ReplyClass.NEGATIVE
    assert reply_class_of(599) is ReplyClass.NEGATIVE
    with pytest.raises(SmtpProtocolError):
        reply_class_of(199)
