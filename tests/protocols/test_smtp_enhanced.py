"""RFC 2034 enhanced status codes: prefixed after EHLO, never after HELO."""

from qtoaster.core.reply import OK, Reply
from qtoaster.protocols.smtp import events as ev
from qtoaster.protocols.smtp.server import NEED_DATA, ServerConnection

EHLO_REPLY = Reply(250, "mx.test\nPIPELINING\nENHANCEDSTATUSCODES")


def answer_all(conn: ServerConnection, data: bytes) -> bytes:
    conn.receive_data(data)
    while (event := conn.next_event()) is not NEED_DATA:
        conn.send(EHLO_REPLY if isinstance(event, ev.Helo) else OK)
    return conn.data_to_send()


def test_after_ehlo_every_reply_carries_the_code() -> None:
    conn = ServerConnection(enhanced_status_codes=True)
    out = answer_all(conn, b"EHLO c\r\nMAIL FROM:<a@b>\r\nBOGUS\r\nDATA\r\n")
    assert out == (
        b"250-mx.test\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n"
        b"250 2.0.0 ok\r\n"
        b"502 5.5.1 unimplemented (#5.5.1)\r\n"
        b"503 5.5.1 RCPT first (#5.5.1)\r\n"
    )
    assert conn.enhanced


def test_after_helo_replies_are_qmails_byte_for_byte() -> None:
    conn = ServerConnection(enhanced_status_codes=True)
    out = answer_all(conn, b"HELO c\r\nRCPT TO:<x@y>\r\n")
    assert out.endswith(b"503 MAIL first (#5.5.1)\r\n")
    assert not conn.enhanced


def test_code_taken_from_qmails_text_or_class_default() -> None:
    assert Reply(553, "sorry (#5.7.1)").enhanced_code == "5.7.1"
    assert Reply(550, "sorry, no mailbox here by that name (#5.1.1 - chkusr)").enhanced_code == (
        "5.1.1"
    )
    assert Reply(451, "See http://pobox.com/~djb/docs/smtplf.html.").enhanced_code == "4.0.0"
    assert Reply(250, "a\nb").render(enhanced=True) == b"250-2.0.0 a\r\n250 2.0.0 b\r\n"
