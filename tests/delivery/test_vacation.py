"""The autoresponder's decision (headers + envelope + state -> reply or why not) and its
reply's bytes (RFC 3834; docs/vacation.md)."""

from __future__ import annotations

from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32

import pytest

from qtoaster.delivery.vacation import Reply, Skip, decide
from qtoaster.directory.model import DAY, Vacation

NOW = 1_700_000_000.0
USER = "alice@example.test"
SENDER = "dave@sender.test"
ON = Vacation(True, "Away", "Back on Monday.\r\nAlice\n")
HEAD = (
    b"From: Dave <dave@sender.test>\n"
    b"To: Alice <Alice@Example.test>\n"
    b"Subject: lunch?\n"
    b"Message-ID: <m1@sender.test>\n"
)


def head(extra: bytes = b"", base: bytes = HEAD) -> Message:
    return BytesHeaderParser(policy=compat32).parsebytes(base + extra)


def run(
    h: Message,
    sender: str = SENDER,
    vacation: Vacation = ON,
    last: float | None = None,
    now: float = NOW,
) -> Reply | Skip:
    return decide(h, sender, USER, (USER,), vacation, last, now, "<r1@mx.example.test>")


GOLDEN = (
    b"From: alice@example.test\n"
    b"To: dave@sender.test\n"
    b"Subject: Away\n"
    b"Date: Tue, 14 Nov 2023 22:13:20 -0000\n"
    b"Message-ID: <r1@mx.example.test>\n"
    b"In-Reply-To: <m1@sender.test>\n"
    b"References: <m0@sender.test> <m1@sender.test>\n"
    b"Auto-Submitted: auto-replied\n"
    b'Content-Type: text/plain; charset="utf-8"\n'
    b"Content-Transfer-Encoding: 7bit\n"
    b"MIME-Version: 1.0\n"
    b"\n"
    b"Back on Monday.\n"
    b"Alice\n"
)


def test_the_reply_bytes() -> None:
    decision = run(head(b"References: <m0@sender.test>\n"))
    assert decision == Reply(SENDER, GOLDEN)


def test_default_subject_non_ascii_body_and_no_message_id() -> None:
    base = b"To: alice@example.test\nSubject: =?utf-8?q?caf=C3=A9?=\n"
    decision = run(head(base=base), vacation=Vacation(True, "", "Bient\u00f4t.\n"))
    assert isinstance(decision, Reply)
    text = decision.message.decode("ascii")
    assert "Subject: Auto: =?utf-8?q?caf=C3=A9?=\n" in text  # RFC 3834 3.1.5, RFC 2047
    assert "In-Reply-To" not in text and "References" not in text
    assert "Content-Transfer-Encoding: quoted-printable\n" in text
    assert text.endswith("\n\nBient=C3=B4t.\n")


def test_without_a_subject() -> None:
    decision = run(head(base=b"To: alice@example.test\n"), vacation=Vacation(True, "", "x"))
    assert isinstance(decision, Reply)
    assert b"Subject: Auto: your message\n" in decision.message


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        (b"Auto-Submitted: auto-replied\n", "auto-submitted"),
        (b"Auto-Submitted: auto-generated (bounce)\n", "auto-submitted"),
        (b"List-Id: <friends.lists.test>\n", "mailing list"),
        (b"List-Unsubscribe: <mailto:x@lists.test>\n", "mailing list"),
        (b"Mailing-List: contact x@lists.test\n", "mailing list"),
        (b"Precedence: bulk\n", "bulk precedence"),
        (b"Precedence: LIST\n", "bulk precedence"),
        (b"Precedence: junk\n", "bulk precedence"),
        (b"X-Auto-Response-Suppress: DR, OOF\n", "auto-response suppressed"),
        (b"X-Spam-Flag: YES\n", "spam"),
        (b"X-Spam-Status: Yes, score=9.1 required=5.0\n", "spam"),
    ],
)
def test_no_reply_to(extra: bytes, why: str) -> None:
    assert run(head(extra)) == Skip(why)


@pytest.mark.parametrize(
    "extra",
    [
        b"Auto-Submitted: no\n",
        b"Precedence: first-class\n",
        b"X-Spam-Status: No, score=0.1\n",
        b"X-Auto-Response-Suppress: DR\n",
    ],
)
def test_these_get_a_reply(extra: bytes) -> None:
    assert isinstance(run(head(extra)), Reply)


@pytest.mark.parametrize(
    ("sender", "why"),
    [
        ("", "null sender"),
        ("#@[]", "double bounce"),
        ("MAILER-DAEMON@sender.test", "automatic sender"),
        ("postmaster@sender.test", "automatic sender"),
        ("owner-friends@lists.test", "automatic sender"),
        ("friends-request@lists.test", "automatic sender"),
        ("no-reply@shop.test", "automatic sender"),
    ],
)
def test_no_reply_to_senders(sender: str, why: str) -> None:
    assert run(head(), sender=sender) == Skip(why)


def test_only_mail_that_names_the_user() -> None:
    bcc_or_list = b"From: dave@sender.test\nTo: friends@lists.test\nSubject: hi\n"
    assert run(head(base=bcc_or_list)) == Skip("not addressed to the user")
    assert isinstance(run(head(base=bcc_or_list + b"Cc: alice@example.test\n")), Reply)
    assert isinstance(run(head(base=bcc_or_list + b"Resent-To: alice@example.test\n")), Reply)


def test_once_per_sender_per_period() -> None:
    assert run(head(), last=NOW - DAY) == Skip("answered already")
    assert run(head(), last=NOW - 7 * DAY + 1) == Skip("answered already")
    assert isinstance(run(head(), last=NOW - 7 * DAY), Reply)
    hourly = Vacation(True, "Away", "x", period=3600)
    assert isinstance(run(head(), vacation=hourly, last=NOW - 3600), Reply)


def test_dates_and_the_switch() -> None:
    assert run(head(), vacation=Vacation(False, "Away", "x")) == Skip("not active")
    later = Vacation(True, "Away", "x", starts=int(NOW) + 1)
    assert run(head(), vacation=later) == Skip("not active")
    over = Vacation(True, "Away", "x", ends=int(NOW))
    assert run(head(), vacation=over) == Skip("not active")
    now_on = Vacation(True, "Away", "x", starts=int(NOW), ends=int(NOW) + 1)
    assert isinstance(run(head(), vacation=now_on), Reply)
