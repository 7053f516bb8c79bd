"""ServerConnection and STARTTLS (RFC 3207): the event, input discarding, the reset after TLS."""

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

READY = Reply(220, "ready for tls")
INJECTION = b"STARTTLS\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n"


def feed(conn: ServerConnection, data: bytes) -> ev.Event:
    conn.receive_data(data)
    event = conn.next_event()
    assert event is not NEED_DATA
    return event


def assert_state(conn: ServerConnection, state: State) -> None:
    assert conn.state is state


def drain(conn: ServerConnection) -> list[ev.Event]:
    """Events until NEED_DATA, answering StartTls with 220 and everything else with 250."""
    events = []
    while (event := conn.next_event()) is not NEED_DATA:
        events.append(event)
        if not isinstance(event, ev.ConnectionClosed):
            conn.send(READY if isinstance(event, ev.StartTls) else R.OK)
    return events


def test_starttls_event_and_parameters() -> None:
    conn = ServerConnection()
    conn.receive_data(b"STARTTLS now\r\nSTARTTLS   \r\n")
    assert conn.next_event() == ev.StartTls()  # spaces only: no parameter (qmail)
    assert conn.data_to_send() == b"501 Syntax error (no parameters allowed) (#5.5.4)\r\n"


@pytest.mark.parametrize("code", [454, 502])
def test_refused_starttls_stays_in_clear_text(code: int) -> None:
    conn = ServerConnection()
    feed(conn, b"MAIL FROM:<a@b>\r\n")
    conn.send(R.OK)
    conn.receive_data(b"STARTTLS\r\nRCPT TO:<c@d>\r\n")
    assert conn.next_event() == ev.StartTls()
    conn.send(Reply(code, "TLS missing certificate (#4.3.0)"))
    assert_state(conn, State.MAIL)
    assert conn.next_event() == ev.RcptTo("c@d", {})
    assert not conn.tls


def test_injection_in_one_chunk_never_becomes_a_command() -> None:
    conn = ServerConnection()
    conn.receive_data(INJECTION)
    assert conn.next_event() == ev.StartTls()
    conn.send(READY)
    assert conn.buffered == 0  # dropped at the 220
    assert_state(conn, State.TLS_PENDING)
    assert conn.next_event() is NEED_DATA
    conn.discard_input()
    conn.start_tls_done()
    assert drain(conn) == []
    conn.receive_data(b"RCPT TO:<c@d>\r\n")
    assert conn.next_event() is NEED_DATA  # the engine answered 503 MAIL first itself
    assert conn.data_to_send() == b"220 ready for tls\r\n503 MAIL first (#5.5.1)\r\n"


def test_injection_byte_by_byte_never_becomes_a_command() -> None:
    conn = ServerConnection()
    events: list[ev.Event] = []
    for i in range(len(INJECTION)):
        conn.receive_data(INJECTION[i : i + 1])
        events += drain(conn)
    assert events == [ev.StartTls()]
    assert_state(conn, State.TLS_PENDING)  # held, never parsed
    conn.discard_input()  # the driver hands the socket to TLS
    conn.start_tls_done()
    assert drain(conn) == []
    assert conn.buffered == 0


def test_bytes_after_the_switch_are_kept() -> None:
    # asyncio may deliver decrypted bytes before its start_tls() returns: they must survive.
    conn = ServerConnection()
    feed(conn, b"STARTTLS\r\n")
    conn.send(READY)
    conn.receive_data(b"MAIL FROM:<evil@x>\r\n")  # clear text, before the switch
    conn.discard_input()
    conn.receive_data(b"EHLO c\r\nMA")  # decrypted, before start_tls_done()
    assert conn.next_event() is NEED_DATA
    conn.start_tls_done()
    assert conn.next_event() == ev.Helo("c", extended=True)
    conn.send(R.OK)
    assert feed(conn, b"IL FROM:<a@b>\r\n") == ev.MailFrom("a@b", {}, None, None)


def test_discard_input_drops_a_partial_over_long_line() -> None:
    conn = ServerConnection(max_line=16)
    conn.receive_data(b"STARTTLS\r\n" + b"x" * 40)
    assert conn.next_event() == ev.StartTls()
    conn.send(READY)
    conn.start_tls_done()
    assert feed(conn, b"NOOP\r\n") == ev.Noop()


def test_tls_resets_helo_transaction_and_enhanced_codes() -> None:
    conn = ServerConnection(enhanced_status_codes=True)
    feed(conn, b"EHLO c\r\n")
    conn.send(Reply(250, "me\nSTARTTLS"))
    feed(conn, b"MAIL FROM:<a@b>\r\n")
    conn.send(R.OK)
    feed(conn, b"RCPT TO:<c@d>\r\n")
    conn.send(R.OK)
    assert conn.helo_seen and conn.enhanced
    assert feed(conn, b"STARTTLS\r\n") == ev.StartTls()
    conn.send(READY)
    conn.start_tls_done()
    assert conn.tls and not conn.helo_seen and conn.helo is None and not conn.enhanced
    assert_state(conn, State.COMMAND)
    conn.receive_data(b"DATA\r\n")
    assert conn.next_event() is NEED_DATA  # 503: the transaction is gone
    feed(conn, b"EHLO c\r\n")
    conn.send(Reply(250, "me"))
    assert conn.helo == "c" and conn.enhanced
    assert conn.data_to_send().split(b"\r\n")[-3:] == [
        b"503 MAIL first (#5.5.1)",
        b"250 me",
        b"",
    ]


def test_starttls_in_tls_is_unimplemented() -> None:
    conn = ServerConnection(tls=True)  # SMTPS (spec 7.4)
    assert conn.tls
    conn.receive_data(b"STARTTLS\r\nSTARTTLS x\r\nNOOP\r\n")
    assert conn.next_event() == ev.Noop()
    assert conn.data_to_send() == b"502 unimplemented (#5.5.1)\r\n" * 2


def test_start_tls_done_only_after_a_2xx_to_starttls() -> None:
    conn = ServerConnection()
    with pytest.raises(SmtpProtocolError):
        conn.start_tls_done()
    feed(conn, b"STARTTLS\r\n")
    with pytest.raises(SmtpProtocolError):
        conn.start_tls_done()  # not answered yet
    conn.send(Reply(454, "TLS not available (#4.3.0)"))
    with pytest.raises(SmtpProtocolError):
        conn.start_tls_done()


def test_handshake_failure_notice_and_eof_while_pending() -> None:
    conn = ServerConnection()
    feed(conn, b"STARTTLS\r\n")
    conn.send(READY)
    conn.send(Reply(454, "TLS connection failed (#4.3.0)"))  # unsolicited, stays pending
    assert feed(conn, b"") == ev.ConnectionClosed()
    assert conn.closed
    assert conn.data_to_send() == b"220 ready for tls\r\n454 TLS connection failed (#4.3.0)\r\n"


def test_starttls_during_data_is_message_text() -> None:
    conn = ServerConnection()
    for line, answer in ((b"MAIL FROM:<a@b>", R.OK), (b"RCPT TO:<c@d>", R.OK)):
        feed(conn, line + b"\r\n")
        conn.send(answer)
    feed(conn, b"DATA\r\n")
    conn.send(R.GO_AHEAD)
    assert feed(conn, b"STARTTLS\r\n") == ev.DataChunk(b"STARTTLS")  # CRLF held back
