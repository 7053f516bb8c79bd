"""Pop3Connection's driver contract: answers, login, close, STLS, limits, states table."""

from __future__ import annotations

import pytest

from qtoaster.protocols.pop3 import events as ev
from qtoaster.protocols.pop3.server import NEED_DATA, Pop3Connection, Pop3ProtocolError, State
from qtoaster.protocols.pop3.states import TRANSITIONS, Answer, next_state


def connected(data: bytes, **options: int) -> Pop3Connection:
    conn = Pop3Connection(**options)  # type: ignore[arg-type]
    conn.receive_data(data)
    return conn


def state_of(conn: Pop3Connection) -> State:
    """The state, without mypy keeping an earlier narrowing of ``conn.state``."""
    return conn.state


def logged_in_conn() -> Pop3Connection:
    conn = connected(b"USER a\r\nPASS b\r\n")
    assert conn.next_event() == ev.User("a")
    conn.ok()
    assert conn.next_event() == ev.Pass("b")
    assert conn.user == "a"
    conn.logged_in()
    assert conn.state is State.TRANSACTION
    assert conn.user is None
    conn.data_to_send()
    return conn


def test_greeting_and_ok_texts() -> None:
    conn = Pop3Connection()
    conn.ok("<1.2@h>")
    conn.ok()
    assert conn.data_to_send() == b"+OK <1.2@h>\r\n+OK \r\n"


def test_err_with_response_codes() -> None:
    conn = Pop3Connection()
    conn.err("unable to lock maildrop", code="IN-USE")
    conn.err("try later", code="SYS/TEMP")
    conn.err("plain")
    assert conn.data_to_send() == (
        b"-ERR [IN-USE] unable to lock maildrop\r\n-ERR [SYS/TEMP] try later\r\n-ERR plain\r\n"
    )
    for bad in ("", "A B", "A]"):
        with pytest.raises(Pop3ProtocolError):
            conn.err("x", code=bad)


def test_reply_text_with_line_breaks_is_refused() -> None:
    conn = Pop3Connection()
    with pytest.raises(Pop3ProtocolError):
        conn.ok("a\r\n-ERR injected")
    assert conn.data_to_send() == b""


def test_ok_then_logged_in_also_works() -> None:
    conn = connected(b"APOP a d\r\nSTAT\r\n")
    assert conn.next_event() == ev.Apop("a", "d")
    conn.ok()
    with pytest.raises(Pop3ProtocolError):
        conn.next_event()  # logged_in() is due
    conn.logged_in()
    assert conn.next_event() == ev.Stat()
    assert conn.data_to_send() == b"+OK \r\n"


def test_logged_in_needs_a_login_event() -> None:
    conn = connected(b"USER a\r\n")
    with pytest.raises(Pop3ProtocolError):
        conn.logged_in()
    conn.next_event()
    with pytest.raises(Pop3ProtocolError):
        conn.logged_in()  # USER is no login


def test_unanswered_event_and_bad_answers() -> None:
    conn = connected(b"CAPA\r\nUSER a\r\n")
    assert conn.next_event() == ev.Capa()
    with pytest.raises(Pop3ProtocolError):
        conn.next_event()
    with pytest.raises(Pop3ProtocolError):
        conn.challenge("x")  # not an answer to CAPA
    conn.multiline("Capability list follows", ["TOP", b"UIDL"])
    assert conn.data_to_send() == b"+OK Capability list follows\r\nTOP\r\nUIDL\r\n.\r\n"
    assert conn.next_event() == ev.User("a")
    with pytest.raises(Pop3ProtocolError):
        conn.send_multiline_start()  # USER has a single-line answer


def test_close_after_send_and_close() -> None:
    conn = connected(b"USER a\r\nPASS b\r\nNOOP\r\n")
    conn.next_event()
    conn.ok()
    conn.next_event()
    conn.close_after_send()
    conn.err("authorization failed")
    assert conn.closed and conn.state is State.CLOSED
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send() == b"+OK \r\n-ERR authorization failed\r\n"
    with pytest.raises(Pop3ProtocolError):
        conn.ok()
    other = Pop3Connection()
    other.close()
    assert other.closed and other.data_to_send() == b""


def test_close_after_a_multiline_answer_waits_for_its_end() -> None:
    conn = connected(b"CAPA\r\n")
    conn.next_event()
    conn.close_after_send()
    conn.send_multiline_start("x")
    assert not conn.closed
    conn.send_multiline_end()
    assert conn.closed


def test_quit_closes_and_ignores_the_rest() -> None:
    conn = logged_in_conn()
    conn.receive_data(b"QUIT\r\nDELE 1\r\n")
    assert conn.next_event() == ev.Quit()
    conn.err("unable to unlink all deleted messages")
    assert conn.closed
    assert conn.next_event() is NEED_DATA


def test_transaction_events() -> None:
    conn = logged_in_conn()
    conn.receive_data(
        b"STAT\r\nLIST\r\nLIST 2\r\nUIDL\r\nUIDL 3\r\nRETR 1\r\nTOP 1 2\r\nTOP 1\r\n"
        b"DELE 4\r\nNOOP\r\nRSET\r\nLAST\r\nCAPA\r\n"
    )
    expected = [
        ev.Stat(),
        ev.List(None),
        ev.List(2),
        ev.Uidl(None),
        ev.Uidl(3),
        ev.Retr(1),
        ev.Top(1, 2),
        ev.Top(1, None),
        ev.Dele(4),
        ev.Noop(),
        ev.Rset(),
        ev.Last(),
        ev.Capa(),
    ]
    for event in expected:
        assert conn.next_event() == event
        conn.err("x")
    assert conn.next_event() is NEED_DATA


def test_auth_exchange_lines_are_not_commands() -> None:
    conn = connected(b"AUTH CRAM-MD5\r\nQUIT\r\nAUTH PLAIN dGVzdA==\r\n")
    assert conn.next_event() == ev.Auth("CRAM-MD5", None)
    conn.challenge("PDE+")
    assert conn.state is State.AUTH_EXCHANGE
    assert conn.next_event() == ev.AuthLine("QUIT")
    conn.err("malformed")
    assert conn.next_event() == ev.Auth("PLAIN", "dGVzdA==")
    conn.logged_in()
    assert state_of(conn) is State.TRANSACTION
    assert conn.data_to_send() == b"+ PDE+\r\n-ERR malformed\r\n+OK \r\n"


def test_auth_line_too_long_ends_the_exchange() -> None:
    conn = connected(b"AUTH X\r\n" + b"A" * 100 + b"\r\nNOOP\r\n", max_auth_line=50)
    conn.next_event()
    conn.challenge("")
    assert conn.next_event() is NEED_DATA
    assert conn.state is State.AUTHORIZATION
    assert conn.data_to_send() == b"+ \r\n-ERR line too long\r\n+OK \r\n"


def test_stls_injection_and_handshake() -> None:
    conn = connected(b"STLS\r\nUSER evil\r\n")
    assert conn.next_event() == ev.Stls()
    conn.ok("Begin TLS negotiation")
    assert conn.state is State.TLS_PENDING and conn.buffered == 0
    conn.receive_data(b"USER late\r\n")
    assert conn.next_event() is NEED_DATA  # held, not parsed
    conn.discard_input()
    conn.start_tls_done()
    assert conn.tls and state_of(conn) is State.AUTHORIZATION
    conn.receive_data(b"USER tls\r\n")
    assert conn.next_event() == ev.User("tls")
    with pytest.raises(Pop3ProtocolError):
        conn.start_tls_done()


def test_stls_refused_keeps_clear_text() -> None:
    conn = connected(b"STLS\r\nUSER a\r\n")
    conn.next_event()
    conn.err("TLS not available")
    assert not conn.tls
    assert conn.next_event() == ev.User("a")


def test_pops_starts_in_tls() -> None:
    conn = connected(b"STLS\r\n", tls=True)
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send() == b"-ERR Command not permitted when TLS active\r\n"


def test_eof_in_tls_pending() -> None:
    conn = connected(b"STLS\r\n")
    conn.next_event()
    conn.ok()
    conn.receive_data(b"")
    assert conn.next_event() == ev.ConnectionClosed()
    assert conn.closed


def test_long_line_discarded_and_buffer_bounded() -> None:
    conn = Pop3Connection(max_line=16)
    conn.receive_data(b"X" * 40)
    assert conn.next_event() is NEED_DATA
    assert conn.buffered < 16
    conn.receive_data(b"YYY\r\nNOOP\r\n")
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send() == b"-ERR line too long\r\n+OK \r\n"


def test_nul_and_case() -> None:
    conn = connected(b"uSeR bob\0hidden\r\n")
    assert conn.next_event() == ev.User("bob")


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError):
        Pop3Connection(max_errors=0)
    with pytest.raises(ValueError):
        Pop3Connection(max_line=4)


def test_states_table() -> None:
    assert next_state(State.TRANSACTION, ev.Retr, Answer.MULTILINE) is State.TRANSACTION
    assert next_state(State.AUTHORIZATION, ev.Quit, Answer.ERR) is State.CLOSED
    with pytest.raises(Pop3ProtocolError):
        next_state(State.TRANSACTION, ev.Dele, Answer.MULTILINE)
    with pytest.raises(Pop3ProtocolError):
        next_state(State.AUTHORIZATION, ev.Stat, Answer.OK)
    # Every (state, event) pair in the table is one the engine can be in; no CLOSED key.
    assert all(state not in (State.CLOSED, State.TLS_PENDING) for state, _ in TRANSITIONS)
