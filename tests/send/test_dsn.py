"""RFC 3464 DSN bounces (issue #6): parsed back with the email package, envelope like QSBMF."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

import pytest

from qtoaster.core.envelope import Envelope
from qtoaster.send.bounce import Bounce, BounceParams
from qtoaster.send.dsn import build_dsn

PARAMS = BounceParams("MAILER-DAEMON", "mx.example.com", "postmaster", "example.com")
NOW = 1_700_000_000.0  # 14 Nov 2023 22:13:20 UTC
ARRIVAL = NOW - 3600
ORIGINAL = b"From: alice@example.org\nSubject: hello\n\nHi Bob.\n"
NO_MAILBOX = "Sorry, no mailbox here by that name. (#5.1.1)\n"
REMOTE_550 = (
    "192.0.2.7 does not like recipient.\n"
    "Remote host said: 550 5.1.1 no such user\n"
    "Giving up on 192.0.2.7.\n"
)


def dsn(failures: list[tuple[str, str]], sender: str = "alice@example.org", **kw: str) -> Bounce:
    bounce = build_dsn(
        sender, failures, PARAMS, NOW, reporting_mta="mx.example.com", arrival=ARRIVAL, **kw
    )
    assert bounce is not None
    return bounce


def parse(bounce: Bounce, original: bytes = ORIGINAL) -> EmailMessage:
    message = email.message_from_bytes(
        bounce.head + original + bounce.tail, policy=email.policy.default
    )
    assert isinstance(message, EmailMessage)
    assert message.defects == []
    return message


def status_blocks(message: EmailMessage) -> list[EmailMessage]:
    parts = list(message.iter_parts())
    assert [part.get_content_type() for part in parts] == [
        "text/plain",
        "message/delivery-status",
        "message/rfc822",
    ]
    return messages(parts[1])


def messages(part: object) -> list[EmailMessage]:
    """The sub-messages of a message/* part (delivery-status blocks, the rfc822 copy)."""
    assert isinstance(part, EmailMessage)
    payload = part.get_payload()
    assert isinstance(payload, list)
    assert all(isinstance(item, EmailMessage) for item in payload)
    return [item for item in payload if isinstance(item, EmailMessage)]


def copy_of(message: EmailMessage) -> EmailMessage:
    return messages(list(message.iter_parts())[2])[0]


def recipient(report: str, rcpt: str = "bob@example.com") -> EmailMessage:
    blocks = status_blocks(parse(dsn([(rcpt, report)])))
    assert len(blocks) == 2
    return blocks[1]


def test_golden_single_recipient() -> None:
    bounce = dsn([("nobody@example.com", NO_MAILBOX)], boundary="b1")
    assert bounce.envelope == Envelope("", ("alice@example.org",))
    assert bounce.head == (
        b"Date: 14 Nov 2023 22:13:20 -0000\n"
        b"From: MAILER-DAEMON@mx.example.com\n"
        b"To: alice@example.org\n"
        b"Subject: failure notice\n"
        b"Auto-Submitted: auto-replied\n"
        b"MIME-Version: 1.0\n"
        b"Content-Type: multipart/report; report-type=delivery-status;\n"
        b'\tboundary="b1"\n'
        b"\n"
        b"--b1\n"
        b"Content-Type: text/plain; charset=us-ascii\n"
        b"\n"
        b"Hi. This is the qmail-send program at mx.example.com.\n"
        b"I'm afraid I wasn't able to deliver your message to the following addresses.\n"
        b"This is a permanent error; I've given up. Sorry it didn't work out.\n"
        b"\n"
        b"<nobody@example.com>:\n"
        b"Sorry, no mailbox here by that name. (#5.1.1)\n"
        b"\n"
        b"\n--b1\n"
        b"Content-Type: message/delivery-status\n"
        b"\n"
        b"Reporting-MTA: dns; mx.example.com\n"
        b"Arrival-Date: 14 Nov 2023 21:13:20 -0000\n"
        b"\n"
        b"Final-Recipient: rfc822; nobody@example.com\n"
        b"Action: failed\n"
        b"Status: 5.1.1\n"
        b"Diagnostic-Code: X-Qmail; Sorry, no mailbox here by that name. (#5.1.1)\n"
        b"\n--b1\n"
        b"Content-Type: message/rfc822\n"
        b"\n"
        b"Return-Path: <alice@example.org>\n"
    )
    assert bounce.tail == b"\n--b1--\n"


def test_parses_as_multipart_report() -> None:
    message = parse(dsn([("nobody@example.com", NO_MAILBOX), ("bob@remote.test", REMOTE_550)]))
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "delivery-status"
    assert message["Subject"] == "failure notice"
    text, _, copy = message.iter_parts()
    assert isinstance(text, EmailMessage)
    body = text.get_content()
    assert "<nobody@example.com>:\nSorry, no mailbox here" in body
    assert "<bob@remote.test>:\n192.0.2.7 does not like recipient.\n" in body
    assert "Below this line" not in body
    blocks = status_blocks(message)
    assert blocks[0]["Reporting-MTA"] == "dns; mx.example.com"
    assert blocks[0]["Arrival-Date"] == "14 Nov 2023 21:13:20 -0000"
    assert [b["Final-Recipient"] for b in blocks[1:]] == [
        "rfc822; nobody@example.com",
        "rfc822; bob@remote.test",
    ]
    assert all(b["Action"] == "failed" for b in blocks[1:])
    inner = messages(copy)[0]
    assert inner["Return-Path"] == "<alice@example.org>"
    assert inner["Subject"] == "hello"
    assert inner.get_content() == "Hi Bob.\n"


def test_status_from_qmail_code() -> None:
    block = recipient(NO_MAILBOX)
    assert block["Status"] == "5.1.1"
    assert block["Remote-MTA"] is None


def test_status_and_diagnostic_from_remote_reply() -> None:
    block = recipient(REMOTE_550)
    assert block["Status"] == "5.1.1"
    assert block["Diagnostic-Code"] == "smtp; 550 5.1.1 no such user"
    assert block["Remote-MTA"] == "dns; [192.0.2.7]"


def test_multiline_remote_reply_and_ipv6() -> None:
    report = (
        "Connected to 2001:db8::25 but sender was rejected.\n"
        "Remote host said: 553-5.7.1 you are\n553 5.7.1 not welcome\n"
    )
    block = recipient(report)
    assert block["Status"] == "5.7.1"
    assert block["Diagnostic-Code"] == "smtp; 553-5.7.1 you are 553 5.7.1 not welcome"
    assert block["Remote-MTA"] == "dns; [IPv6:2001:db8::25]"


def test_status_defaults() -> None:
    assert recipient("Sorry, it did not work.")["Status"] == "5.0.0"
    # RFC 3463: an enhanced code of another class than the reply code is ignored
    bad_class = "192.0.2.7 failed after I sent the message.\nRemote host said: 554 4.0.0 hm\n"
    assert recipient(bad_class)["Status"] == "5.0.0"
    # queuelifetime turned a temporary failure permanent: the code says what happened
    expired = (
        "Connected to 192.0.2.7 but connection died. (#4.4.2)\n"
        "I'm not going to try again; this message has been in the queue too long.\n"
    )
    block = recipient(expired)
    assert block["Status"] == "4.4.2"
    assert block["Action"] == "failed"
    assert block["Remote-MTA"] == "dns; [192.0.2.7]"


def test_host_not_contacted_is_no_remote_mta() -> None:
    block = recipient("Sorry, I couldn't find any host named nx.example. (#5.1.2)\n")
    assert block["Remote-MTA"] is None
    assert block["Status"] == "5.1.2"
    assert block["Diagnostic-Code"].startswith("X-Qmail; Sorry, I couldn't find")


def test_non_ascii_recipient_and_report() -> None:
    message = parse(dsn([("jö@exämple.test", "caf\xe9 \udcff\n\nsecond")]))
    block = status_blocks(message)[1]
    assert block["Final-Recipient"] == "utf-8; j\\x{F6}@ex\\x{E4}mple.test"
    assert block["Diagnostic-Code"] == "X-Qmail; caf? ? second"
    text = next(message.iter_parts())
    assert text["Content-Transfer-Encoding"] == "quoted-printable"
    # QP keeps qmail's bytes exactly, the invalid UTF-8 byte included
    raw = text.get_payload(decode=True)
    assert isinstance(raw, bytes)
    assert raw.endswith("<jö@exämple.test>:\ncafé ".encode() + b"\xff\n/second\n\n")


def test_line_break_in_recipient() -> None:
    block = recipient("no", rcpt="a\nb@example.com")
    assert block["Final-Recipient"] == "utf-8; a\\x{FFFD}b@example.com"


def test_quoted_local_part() -> None:
    message = parse(dsn([("with space@example.com", "no")], sender="x y@example.org"))
    assert message["To"] == '"x y"@example.org'
    assert status_blocks(message)[1]["Final-Recipient"] == 'rfc822; "with space"@example.com'


def test_long_report_is_folded() -> None:
    bounce = dsn([("bob@example.com", "word " * 400 + "x" * 2000)], boundary="b")
    head = bounce.head.split(b"\n--b\n")[2]  # the delivery-status part
    assert max(len(line) for line in head.split(b"\n")) <= 998
    assert b"\n word word" in head
    block = status_blocks(parse(bounce))[1]
    assert block["Diagnostic-Code"].startswith("X-Qmail; word word")


def test_message_without_final_newline() -> None:
    message = parse(dsn([("bob@example.com", "no")]), original=b"Subject: x\n\nno newline")
    assert copy_of(message).get_content() == "no newline"


def test_double_bounce() -> None:
    bounce = dsn([("alice@example.org", "Gone.\n")], sender="")
    assert bounce.envelope == Envelope("#@[]", ("postmaster@example.com",))
    message = parse(bounce)
    assert message["To"] == "postmaster@example.com"
    text = next(message.iter_parts()).get_content()
    assert "but the bounce bounced!\n\n<alice@example.org>:\nGone.\n" in text
    assert copy_of(message)["Return-Path"] == "<>"


def test_triple_bounce_is_discarded() -> None:
    failures = [("postmaster@example.com", "x")]
    assert build_dsn("#@[]", failures, PARAMS, NOW, reporting_mta="m", arrival=NOW) is None


def test_verp_sender_is_reduced() -> None:
    bounce = dsn([("r@x", "no")], sender="owner-@lists.example-@[]")
    assert bounce.envelope.recipients == ("owner-@lists.example",)
    assert b"Return-Path: <owner-@lists.example>\n" in bounce.head


def test_random_boundary() -> None:
    one, two = dsn([("r@x", "no")]), dsn([("r@x", "no")])
    assert one.tail != two.tail
    assert one.tail.startswith(b"\n--qtoaster-dsn-")


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="boundary"):
        dsn([("r@x", "no")], boundary="has space")
    with pytest.raises(ValueError, match="at least one"):
        dsn([])
