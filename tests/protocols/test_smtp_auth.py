"""ServerConnection and AUTH (RFC 4954): Auth events, the 334 mode, AuthLine framing."""

from __future__ import annotations

import pytest

from qtoaster.core import reply as R
from qtoaster.core.reply import Reply
from qtoaster.protocols.smtp import events as ev
from qtoaster.protocols.smtp.commands import parse_auth_argument, parse_auth_line
from qtoaster.protocols.smtp.server import (
    MAX_AUTH_LINE,
    NEED_DATA,
    ServerConnection,
    SmtpProtocolError,
    State,
)
from qtoaster.protocols.smtp.states import next_state

USERNAME = Reply(334, "VXNlcm5hbWU6")
AUTH_OK = Reply(235, "ok, go ahead (#2.0.0)")
CANCELED = Reply(501, "auth exchange canceled (#5.0.0)")


def feed(conn: ServerConnection, data: bytes) -> ev.Event:
    conn.receive_data(data)
    event = conn.next_event()
    assert event is not NEED_DATA
    return event


def assert_state(conn: ServerConnection, state: State) -> None:
    assert conn.state is state


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("PLAIN dGVzdA==", ("PLAIN", "dGVzdA==")),
        ("plain   dGVzdA==  ", ("PLAIN", "dGVzdA==  ")),
        ("cram-md5", ("CRAM-MD5", None)),
        ("LOGIN   ", ("LOGIN", None)),
        ("PLAIN =", ("PLAIN", "=")),
        ("", ("", None)),
        ("plaın x", ("PLAıN", "x")),  # ASCII-only upper case, like verbs
    ],
)
def test_parse_auth_argument(argument: str, expected: tuple[str, str | None]) -> None:
    assert parse_auth_argument(argument) == expected


def test_parse_auth_line_strips_one_cr_only() -> None:
    assert parse_auth_line(b"abc\r") == "abc"
    assert parse_auth_line(b"abc\r\r") == "abc\r"
    assert parse_auth_line(b" a\0b ") == " a\0b "
    assert parse_auth_line(b"\xff") == "\udcff"


def test_auth_event_with_initial_response() -> None:
    conn = ServerConnection()
    assert feed(conn, b"AUTH plain dGVzdA==\r\n") == ev.Auth("PLAIN", "dGVzdA==")
    conn.send(AUTH_OK)
    assert_state(conn, State.COMMAND)
    assert conn.data_to_send() == b"235 ok, go ahead (#2.0.0)\r\n"


def test_auth_without_mechanism_is_an_event_for_the_driver() -> None:
    # qmail checks "auth not available" etc. before looking the (empty) name up: 504.
    conn = ServerConnection()
    assert feed(conn, b"AUTH\r\n") == ev.Auth("", None)


def test_334_switches_to_auth_lines_and_back() -> None:
    conn = ServerConnection()
    feed(conn, b"AUTH LOGIN\r\n")
    conn.send(USERNAME)
    assert_state(conn, State.AUTH)
    # Neither a command nor truncated at NUL: the mechanism decides.
    assert feed(conn, b"QUIT\r\n") == ev.AuthLine("QUIT")
    conn.send(Reply(334, "UGFzc3dvcmQ6"))
    assert feed(conn, b"MAIL FROM:<a@b> x\0y\n") == ev.AuthLine("MAIL FROM:<a@b> x\0y")
    conn.send(Reply(535, "authentication failed (#5.7.1)"))
    assert_state(conn, State.COMMAND)
    assert feed(conn, b"QUIT\r\n") == ev.Quit()


def test_star_is_given_as_is() -> None:
    conn = ServerConnection()
    feed(conn, b"AUTH PLAIN\r\n")
    conn.send(Reply(334, ""))
    assert conn.data_to_send() == b"334 \r\n"
    assert feed(conn, b"*\r\n") == ev.AuthLine("*")
    conn.send(CANCELED)
    assert_state(conn, State.COMMAND)


def test_auth_lines_wait_for_their_lf() -> None:
    conn = ServerConnection()
    feed(conn, b"AUTH LOGIN\r\n")
    conn.send(USERNAME)
    conn.receive_data(b"YWxp")
    assert conn.next_event() is NEED_DATA
    assert feed(conn, b"Y2U=\r\n") == ev.AuthLine("YWxpY2U=")


def test_pipelined_lines_after_auth_follow_the_answers() -> None:
    # RFC 4954 4 forbids pipelining past AUTH; if a client does, lines are taken in order
    # and each is an AuthLine only if the answer before it was 334.
    conn = ServerConnection()
    conn.receive_data(b"AUTH LOGIN\r\nYWxpY2U=\r\nc2VjcmV0\r\nNOOP\r\n")
    assert conn.next_event() == ev.Auth("LOGIN", None)
    conn.send(USERNAME)
    assert conn.next_event() == ev.AuthLine("YWxpY2U=")
    conn.send(Reply(334, "UGFzc3dvcmQ6"))
    assert conn.next_event() == ev.AuthLine("c2VjcmV0")
    conn.send(AUTH_OK)
    assert conn.next_event() == ev.Noop()


def test_auth_line_limit_is_its_own() -> None:
    conn = ServerConnection(max_line=16, max_auth_line=40)
    feed(conn, b"AUTH PLAIN\r\n")
    conn.send(Reply(334, ""))
    line = b"A" * 38 + b"\r\n"  # exactly 40 with CRLF: fine
    assert feed(conn, line) == ev.AuthLine("A" * 38)
    conn.send(Reply(334, ""))
    conn.receive_data(b"B" * 39 + b"\r\nNOOP\r\n")  # 41: too long, the exchange is over
    assert conn.next_event() == ev.Noop()
    assert conn.data_to_send() == b"334 \r\n334 \r\n500 line too long (#5.5.2)\r\n"


def test_auth_buffer_is_bounded_while_waiting() -> None:
    conn = ServerConnection(max_line=16, max_auth_line=40)
    feed(conn, b"AUTH PLAIN\r\n")
    conn.send(Reply(334, ""))
    for _ in range(10):
        conn.receive_data(b"C" * 25)
        assert conn.next_event() is NEED_DATA
        assert conn.buffered < 40
    assert conn.data_to_send().count(b"500 line too long") == 1
    assert_state(conn, State.COMMAND)


def test_default_auth_line_limit_is_rfc_4954s() -> None:
    conn = ServerConnection()
    feed(conn, b"AUTH PLAIN\r\n")
    conn.send(Reply(334, ""))
    data = "x" * (MAX_AUTH_LINE - 2)
    assert feed(conn, data.encode() + b"\r\n") == ev.AuthLine(data)


def test_334_is_never_prefixed_with_an_enhanced_code() -> None:
    conn = ServerConnection(enhanced_status_codes=True)
    feed(conn, b"EHLO c\r\n")
    conn.send(Reply(250, "me\nAUTH LOGIN PLAIN"))
    feed(conn, b"AUTH LOGIN\r\n")
    conn.send(USERNAME)
    feed(conn, b"*\r\n")
    conn.send(CANCELED)
    assert conn.data_to_send().split(b"\r\n")[2:] == [
        b"334 VXNlcm5hbWU6",
        b"501 5.0.0 auth exchange canceled (#5.0.0)",
        b"",
    ]


def test_auth_in_a_transaction_may_only_be_refused() -> None:
    conn = ServerConnection()
    feed(conn, b"MAIL FROM:<a@b>\r\n")
    conn.send(R.OK)
    assert feed(conn, b"AUTH PLAIN\r\n") == ev.Auth("PLAIN", None)
    with pytest.raises(SmtpProtocolError):
        conn.send(Reply(334, ""))
    conn.send(Reply(503, "no auth during mail transaction (#5.5.0)"))
    assert_state(conn, State.MAIL)  # the transaction goes on


@pytest.mark.parametrize("code", [354, 300, 250])
def test_only_334_continues_an_exchange(code: int) -> None:
    conn = ServerConnection()
    feed(conn, b"AUTH PLAIN\r\n")
    if code == 250:
        conn.send(Reply(code, "ok"))  # a 2xx to Auth is fine (success with IR)
        assert_state(conn, State.COMMAND)
        return
    with pytest.raises(SmtpProtocolError):
        conn.send(Reply(code, "x"))
    assert next_state(State.AUTH, ev.AuthLine, 334) is State.AUTH
    with pytest.raises(SmtpProtocolError):
        next_state(State.AUTH, ev.AuthLine, code)


def test_unanswered_auth_line_is_a_driver_bug() -> None:
    conn = ServerConnection()
    feed(conn, b"AUTH LOGIN\r\n")
    conn.send(USERNAME)
    feed(conn, b"YWxpY2U=\r\nNOOP\r\n")
    with pytest.raises(SmtpProtocolError):
        conn.next_event()


def test_auth_lines_count_as_commands() -> None:
    conn = ServerConnection(max_commands=3)
    feed(conn, b"AUTH LOGIN\r\n")
    conn.send(USERNAME)
    feed(conn, b"a\r\n")
    conn.send(USERNAME)
    feed(conn, b"b\r\n")
    conn.send(USERNAME)
    conn.receive_data(b"c\r\n")
    assert conn.next_event() is NEED_DATA
    assert conn.closed
    assert conn.data_to_send().endswith(b"421 too many commands, closing connection (#4.7.0)\r\n")


def test_eof_during_exchange_closes() -> None:
    conn = ServerConnection()
    feed(conn, b"AUTH LOGIN\r\n")
    conn.send(USERNAME)
    conn.receive_data(b"YWxp")
    assert feed(conn, b"") == ev.ConnectionClosed()
    assert conn.closed


def test_421_during_exchange_closes() -> None:
    conn = ServerConnection()
    feed(conn, b"AUTH LOGIN\r\n")
    conn.send(USERNAME)
    feed(conn, b"YWxpY2U=\r\n")
    conn.send(Reply(421, "shutting down (#4.3.2)"))
    assert conn.closed
