"""ServerConnection: the driver contract (events, replies, limits, closing)."""

from __future__ import annotations

import pytest

from qtoaster.core import reply as R
from qtoaster.core.reply import Reply
from qtoaster.protocols.smtp import events as ev
from qtoaster.protocols.smtp.server import (
    NEED_DATA,
    ServerConnection,
    SmtpProtocolError,
    State,
)


def feed(conn: ServerConnection, data: bytes) -> ev.Event:
    conn.receive_data(data)
    event = conn.next_event()
    assert event is not NEED_DATA
    return event


def assert_state(conn: ServerConnection, state: State) -> None:
    # A function, so mypy does not carry a narrowed conn.state across calls.
    assert conn.state is state


def open_transaction(conn: ServerConnection) -> None:
    assert isinstance(feed(conn, b"MAIL FROM:<a@b>\r\n"), ev.MailFrom)
    conn.send(R.OK)
    assert isinstance(feed(conn, b"RCPT TO:<c@d>\r\n"), ev.RcptTo)
    conn.send(R.OK)


def test_mail_from_event_carries_params() -> None:
    conn = ServerConnection()
    event = feed(conn, b"MAIL FROM:<a@b> SIZE=12x body=8bitmime AUTH=<> RET\r\n")
    assert event == ev.MailFrom(
        "a@b", {"SIZE": "12x", "BODY": "8bitmime", "AUTH": "<>", "RET": None}, 12, "8BITMIME"
    )


def test_rcpt_event_and_params() -> None:
    conn = ServerConnection()
    feed(conn, b"MAIL FROM:<>\r\n")
    conn.send(R.OK)
    assert feed(conn, b"RCPT TO:<b@c> NOTIFY=NEVER\r\n") == ev.RcptTo("b@c", {"NOTIFY": "NEVER"})


@pytest.mark.parametrize(
    "line",
    [
        b"MAIL FROM:<a\rX-Injected: mailfrom@x.test>\r\n",  # bare CR: legal on the wire
        b"MAIL FROM:a\rb@c.test\r\n",  # bracket-less form
        b"MAIL FROM:<a@b.test> SIZE=10\rX-Injected: p\r\n",  # in a parameter
        b"MAIL FROM:<a@b.test>\r\r\n",  # one CR is the line end, the other a parameter
        b"MAIL FROM:<a\0X-Injected: x@x.test>\r\n",  # NUL: refused, not cut to "a"
    ],
)
def test_cr_nul_in_mail_refused_501(line: bytes) -> None:
    # issue 12 item 6: a CR in the sender would end a header line in Return-Path.
    conn = ServerConnection()
    conn.receive_data(line)
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send() == b"501 bad address syntax (#5.1.7)\r\n"
    assert_state(conn, State.COMMAND)


@pytest.mark.parametrize(
    "line",
    [
        b"RCPT TO:<b\rX-Injected: rcpt@x.test>\r\n",
        b"RCPT TO:<b@c.test> NOTIFY=NEVER\rX\r\n",
        b"RCPT TO:<b@c.test\0>\r\n",
    ],
)
def test_cr_nul_in_rcpt_refused_501(line: bytes) -> None:
    conn = ServerConnection()
    feed(conn, b"MAIL FROM:<a@b>\r\n")
    conn.send(R.OK)
    conn.data_to_send()
    conn.receive_data(line)
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send() == b"501 bad address syntax (#5.1.3)\r\n"
    assert_state(conn, State.MAIL)


def test_helo_name_recorded_only_when_accepted() -> None:
    conn = ServerConnection()
    assert feed(conn, b"EHLO bad.example\r\n") == ev.Helo("bad.example", extended=True)
    conn.send(Reply(550, "no"))
    assert conn.helo is None
    assert feed(conn, b"HELO good.example\r\n") == ev.Helo("good.example", extended=False)
    conn.send(Reply(250, "me"))
    assert conn.helo == "good.example"


def test_states_follow_replies() -> None:
    conn = ServerConnection()
    assert_state(conn, State.COMMAND)
    feed(conn, b"MAIL FROM:<a@b>\r\n")
    conn.send(R.DATABYTES)
    assert_state(conn, State.COMMAND)
    open_transaction(conn)
    assert_state(conn, State.RCPT)
    assert feed(conn, b"DATA\r\n") == ev.Data()
    conn.send(R.QQT_FAILURE)
    assert_state(conn, State.COMMAND)  # transaction closed at DATA whatever the outcome
    open_transaction(conn)
    feed(conn, b"DATA\r\n")
    conn.send(R.GO_AHEAD)
    assert_state(conn, State.DATA)
    assert feed(conn, b"x\r\n.\r\n") == ev.DataChunk(b"x\n")
    assert conn.next_event() == ev.DataEnd(0)
    conn.send(R.OK)
    assert_state(conn, State.COMMAND)


def test_unanswered_event_is_a_driver_bug() -> None:
    conn = ServerConnection()
    feed(conn, b"NOOP\r\nNOOP\r\n")
    with pytest.raises(SmtpProtocolError):
        conn.next_event()


@pytest.mark.parametrize(
    ("setup", "command", "reply"),
    [
        (False, b"NOOP\r\n", Reply(354, "go ahead")),
        (True, b"DATA\r\n", R.OK),  # DATA needs 354 or a refusal
        (False, b"NOOP\r\n", Reply(199, "what")),
    ],
)
def test_invalid_reply_raises_and_queues_nothing(setup: bool, command: bytes, reply: Reply) -> None:
    conn = ServerConnection()
    if setup:
        open_transaction(conn)
    conn.data_to_send()
    feed(conn, command)
    with pytest.raises(SmtpProtocolError):
        conn.send(reply)
    assert conn.data_to_send() == b""


def test_unsolicited_replies_and_421_closes() -> None:
    conn = ServerConnection()
    conn.send(Reply(220, "me ESMTP"))
    conn.send(R.SHUTTING_DOWN)
    assert conn.closed
    assert (
        conn.data_to_send()
        == b"220 me ESMTP\r\n421 service shutting down, try again later (#4.3.2)\r\n"
    )
    with pytest.raises(SmtpProtocolError):
        conn.send(R.OK)


def test_421_answer_to_any_command_closes() -> None:
    conn = ServerConnection()
    feed(conn, b"MAIL FROM:<a@b>\r\nNOOP\r\n")
    conn.send(Reply(421, "bye"))
    assert conn.closed
    assert conn.next_event() is NEED_DATA


def test_quit_closes_and_ignores_the_rest() -> None:
    conn = ServerConnection()
    assert feed(conn, b"QUIT\r\nNOOP\r\n") == ev.Quit()
    conn.receive_data(b"NOOP\r\n")
    assert conn.buffered == 0
    conn.send(Reply(221, "bye"))
    assert conn.closed
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send() == b"221 bye\r\n"


def test_eof_gives_connection_closed_once_after_pending_lines() -> None:
    conn = ServerConnection()
    conn.receive_data(b"NOOP\r\nNOO")
    conn.receive_data(b"")
    assert conn.next_event() == ev.Noop()
    conn.send(R.OK)
    assert conn.next_event() == ev.ConnectionClosed()
    assert conn.closed
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"NOOP\r\n")
    assert conn.next_event() is NEED_DATA


def test_eof_during_data() -> None:
    conn = ServerConnection()
    open_transaction(conn)
    feed(conn, b"DATA\r\n")
    conn.send(R.GO_AHEAD)
    assert feed(conn, b"partial\r\n") == ev.DataChunk(b"partial")
    conn.receive_data(b"")
    assert conn.next_event() == ev.ConnectionClosed()


def test_bare_lf_aborts_with_reply_already_queued() -> None:
    conn = ServerConnection()
    open_transaction(conn)
    feed(conn, b"DATA\r\n")
    conn.send(R.GO_AHEAD)
    conn.data_to_send()
    assert feed(conn, b"a\nb\r\n.\r\n") == ev.DataAborted(R.BARE_LF)
    assert conn.closed
    assert conn.data_to_send() == b"451 See http://pobox.com/~djb/docs/smtplf.html.\r\n"
    assert conn.next_event() is NEED_DATA


def test_data_end_is_after_the_last_chunk_and_commands_follow() -> None:
    conn = ServerConnection()
    open_transaction(conn)
    feed(conn, b"DATA\r\n")
    conn.send(R.GO_AHEAD)
    assert feed(conn, b"Received: x\r\nDelivered-To: y\r\n\r\nhi\r\n.\r\nNOOP\r\n") == ev.DataChunk(
        b"Received: x\nDelivered-To: y\n\nhi\n"
    )
    assert conn.next_event() == ev.DataEnd(2)
    conn.send(R.OK)
    assert conn.next_event() == ev.Noop()


def test_empty_message_has_no_chunk() -> None:
    conn = ServerConnection()
    open_transaction(conn)
    feed(conn, b"DATA\r\n")
    conn.send(R.GO_AHEAD)
    assert feed(conn, b".\r\n") == ev.DataEnd(0)


def test_data_chunks_stream_without_buffering() -> None:
    conn = ServerConnection()
    open_transaction(conn)
    feed(conn, b"DATA\r\n")
    conn.send(R.GO_AHEAD)
    total = 0
    for _ in range(100):
        conn.receive_data(b"y" * 9999 + b"\r\n")
        while (event := conn.next_event()) is not NEED_DATA:
            assert isinstance(event, ev.DataChunk)
            total += len(event.data)
        assert conn.buffered == 0
    assert total == 100 * 10_000 - 1  # the last LF is held until the next byte decides


def test_recipient_limit_resets_per_transaction() -> None:
    conn = ServerConnection(max_recipients=1)
    open_transaction(conn)
    conn.data_to_send()
    conn.receive_data(b"RCPT TO:<x@y>\r\n")
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send() == b"452 too many recipients (#4.5.3)\r\n"
    assert feed(conn, b"MAIL FROM:<a@b>\r\n") == ev.MailFrom("a@b", {}, None, None)
    conn.send(R.OK)
    assert isinstance(feed(conn, b"RCPT TO:<x@y>\r\n"), ev.RcptTo)


def test_overlong_line_buffer_stays_bounded() -> None:
    conn = ServerConnection(max_line=64)
    for _ in range(1000):
        conn.receive_data(b"x" * 1000)
        assert conn.next_event() is NEED_DATA
        assert conn.buffered < 64
    assert conn.data_to_send() == b"500 line too long (#5.5.2)\r\n"
    assert feed(conn, b"\r\nNOOP\r\n") == ev.Noop()


@pytest.mark.parametrize("kwargs", [{"max_line": 0}, {"max_errors": 0}, {"max_recipients": -1}])
def test_limits_must_be_positive(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        ServerConnection(**kwargs)
