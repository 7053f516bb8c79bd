"""rblsmtpd's fake dialog (ucspi-tcp rblsmtpd.c, qmail commands.c), fed whole and byte by byte."""

from __future__ import annotations

import pytest

from qtoaster.core.reply import Reply
from qtoaster.smtpd.rblsmtpd import (
    ACCEPTED,
    BYE,
    GREETING,
    MAX_LINE,
    RblsmtpdDialog,
    log_line,
)

BLOCK = Reply(451, "listed at rbl.test, see http://rbl.test/127.0.0.2")
REFUSED = b"451 listed at rbl.test, see http://rbl.test/127.0.0.2\r\n"

CLIENT = (
    b"EHLO client.example\r\n"
    b"MAIL FROM:<a@client.example>\r\n"
    b"RCPT TO:<b@server.example>\r\n"
    b"DATA\r\n"
    b"rset\n"
    b"NoOp\r\n"
    b"HELO x\r\n"
    b"VRFY b\r\n"
    b"\r\n"
    b"QUIT\r\n"
    b"MAIL FROM:<after@quit>\r\n"
)
SERVER = ACCEPTED * 2 + REFUSED * 2 + ACCEPTED * 3 + REFUSED * 2 + BYE


def by_byte(dialog: RblsmtpdDialog, data: bytes) -> tuple[bytes, bool]:
    out = b""
    closed = False
    for i in range(len(data)):
        reply, closed = dialog.feed(data[i : i + 1])
        out += reply
    return out, closed


def test_greeting_and_constants() -> None:
    assert RblsmtpdDialog.greeting() == b"220 rblsmtpd.local\r\n"
    assert (ACCEPTED, BYE) == (b"250 rblsmtpd.local\r\n", b"221 rblsmtpd.local\r\n")
    assert RblsmtpdDialog(BLOCK).refusal == REFUSED
    assert RblsmtpdDialog.greeting() == GREETING


def test_transcript_in_one_chunk() -> None:
    dialog = RblsmtpdDialog(BLOCK)
    assert dialog.feed(CLIENT) == (SERVER, True)
    assert dialog.closed
    assert dialog.feed(b"HELO again\r\n") == (b"", True)  # nothing after QUIT


def test_transcript_byte_by_byte() -> None:
    assert by_byte(RblsmtpdDialog(BLOCK), CLIENT) == (SERVER, True)


def test_553_refusal() -> None:
    dialog = RblsmtpdDialog(Reply(553, "go away"))
    assert dialog.feed(b"RCPT TO:<x@y>\r\nDATA\n") == (b"553 go away\r\n" * 2, False)


def test_empty_message_gives_code_and_space() -> None:
    assert RblsmtpdDialog(Reply(553, "")).feed(b"DATA\r\n") == (b"553 \r\n", False)


def test_partial_line_waits_for_lf() -> None:
    dialog = RblsmtpdDialog(BLOCK)
    assert dialog.feed(b"HELO x\r") == (b"", False)
    assert dialog.feed(b"\nQUI") == (ACCEPTED, False)
    assert dialog.feed(b"T\r\n") == (BYE, True)


@pytest.mark.parametrize(
    ("line", "answer"),
    [
        (b"quit\r\n", BYE),
        (b"QUIT now please\r\n", BYE),  # the argument does not matter
        (b"helo\n", ACCEPTED),  # no argument, bare LF
        (b"EhLo   x\r\n", ACCEPTED),
        (b"HELO\0junk\r\n", ACCEPTED),  # commands.c cuts the C string at the NUL
        (b"HELO\tx\r\n", REFUSED),  # only a space ends the verb
        (b" HELO x\r\n", REFUSED),  # leading space: the verb is empty
        (b"HELO x\r\r\n", ACCEPTED),  # one CR stripped, the other is in the argument
        (b"QUIT\r\r\n", REFUSED),  # verb "quit\r"
        (b"STARTTLS\r\n", REFUSED),
        (b"AUTH PLAIN AAAA\r\n", REFUSED),
        (b"\xc3\xa9HLO\r\n", REFUSED),
    ],
)
def test_command_reader(line: bytes, answer: bytes) -> None:
    dialog = RblsmtpdDialog(BLOCK)
    assert dialog.feed(line) == (answer, answer == BYE)


def test_long_lines_are_bounded_and_answered() -> None:
    dialog = RblsmtpdDialog(BLOCK)
    for _ in range(50):
        assert dialog.feed(b"x" * 10_000) == (b"", False)
    assert len(dialog._line) <= MAX_LINE
    assert dialog.feed(b"\r\nMAIL" + b" " * 5000 + b"FROM:<>\r\n") == (REFUSED + ACCEPTED, False)


def test_log_line() -> None:
    assert log_line("127.0.0.2", 4242, BLOCK) == (
        "rblsmtpd: 127.0.0.2 pid 4242: 451 listed at rbl.test, see http://rbl.test/127.0.0.2"
    )
