"""QSBMF bounces, double bounces and triple bounces, byte for byte (spec 15.4)."""

from __future__ import annotations

from qtoaster.core.envelope import Envelope
from qtoaster.send.bounce import BounceParams, build_bounce, quote2, recipient_block

PARAMS = BounceParams("MAILER-DAEMON", "mx.example.com", "postmaster", "example.com")
NOW = 1_700_000_000.0  # 14 Nov 2023 22:13:20 UTC


def test_single_bounce() -> None:
    bounce = build_bounce(
        "alice@example.org",
        [
            ("nobody@example.com", "Sorry, no mailbox here by that name. (#5.1.1)"),
            (
                "loop@example.com",
                "This message is looping: it already has my Delivered-To line. (#5.4.6)\n",
            ),
        ],
        PARAMS,
        NOW,
    )
    assert bounce is not None
    assert bounce.envelope == Envelope("", ("alice@example.org",))
    assert bounce.head == (
        b"Date: 14 Nov 2023 22:13:20 -0000\n"
        b"From: MAILER-DAEMON@mx.example.com\n"
        b"To: alice@example.org\n"
        b"Subject: failure notice\n"
        b"\n"
        b"Hi. This is the qmail-send program at mx.example.com.\n"
        b"I'm afraid I wasn't able to deliver your message to the following addresses.\n"
        b"This is a permanent error; I've given up. Sorry it didn't work out.\n"
        b"\n"
        b"<nobody@example.com>:\n"
        b"Sorry, no mailbox here by that name. (#5.1.1)\n"
        b"\n"
        b"<loop@example.com>:\n"
        b"This message is looping: it already has my Delivered-To line. (#5.4.6)\n"
        b"\n"
        b"--- Below this line is a copy of the message.\n"
        b"\n"
        b"Return-Path: <alice@example.org>\n"
    )


def test_double_bounce() -> None:
    bounce = build_bounce("", [("alice@example.org", "Gone.\n")], PARAMS, NOW)
    assert bounce is not None
    assert bounce.envelope == Envelope("#@[]", ("postmaster@example.com",))
    assert bounce.head == (
        b"Date: 14 Nov 2023 22:13:20 -0000\n"
        b"From: MAILER-DAEMON@mx.example.com\n"
        b"To: postmaster@example.com\n"
        b"Subject: failure notice\n"
        b"\n"
        b"Hi. This is the qmail-send program at mx.example.com.\n"
        b"I tried to deliver a bounce message to this address, but the bounce bounced!\n"
        b"\n"
        b"<alice@example.org>:\n"
        b"Gone.\n"
        b"\n"
        b"--- Below this line is the original bounce.\n"
        b"\n"
        b"Return-Path: <>\n"
    )


def test_triple_bounce_is_discarded() -> None:
    assert build_bounce("#@[]", [("postmaster@example.com", "x")], PARAMS, NOW) is None


def test_verp_sender_is_reduced() -> None:
    bounce = build_bounce("owner-@lists.example-@[]", [("r@x", "no")], PARAMS, NOW)
    assert bounce is not None
    assert bounce.envelope.recipients == ("owner-@lists.example",)
    assert b"Return-Path: <owner-@lists.example>\n" in bounce.head


def test_recipient_block_has_no_empty_line() -> None:
    assert recipient_block("a@b", "one\n\ntwo\n\n\nthree") == "<a@b>:\none\n/two\n//three\n\n"
    assert recipient_block("a\nb@c", "") == "<a_b@c>:\n\n"


def test_quoting_as_quote_c() -> None:
    assert quote2("") == ""
    assert quote2("plain.name+tag@example.com") == "plain.name+tag@example.com"
    assert quote2("with space@example.com") == '"with space"@example.com'
    assert quote2('q"uote@example.com') == '"q\\"uote"@example.com'
    assert quote2(".dot@example.com") == '".dot"@example.com'
    assert quote2("a..b@example.com") == '"a..b"@example.com'
    assert quote2("noat") == "noat"
    bounce = build_bounce("x y@example.org", [("r@x", "no")], PARAMS, NOW)
    assert bounce is not None
    assert b'To: "x y"@example.org\n' in bounce.head
    assert b'Return-Path: <"x y"@example.org>\n' in bounce.head
