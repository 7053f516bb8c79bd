"""The vacation autoresponder and Junk filing through a real ``qtoaster run`` (as root:
privilege-separated roles): mail over SMTP (smtplib) to a user on vacation gets exactly
one reply (Auto-Submitted, In-Reply-To, null sender) at the sender's server (a recording
peer reached through control/smtproutes); a second message within the period, a list
message, a bulk one and a bounce get none; spam goes to .Junk for the user who chose it
(docs/vacation.md)."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.smtppeer import SmtpPeer

from .harness import Server, maildir_files, make_home, qt, wait_until


def message(subject: str, extra: str = "", msgid: str = "") -> bytes:
    msgid = msgid or f"<{subject.replace(' ', '-')}@sender.test>"
    return (
        f"From: dave@sender.test\r\nTo: alice@example.test\r\nSubject: {subject}\r\n"
        f"Message-ID: {msgid}\r\n{extra}\r\nhello\r\n"
    ).encode()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Server, SmtpPeer]]:
    peer = SmtpPeer("127.0.0.1").start()
    root = tmp_path_factory.mktemp("vacation")
    home = make_home(root)
    (home / "control" / "smtproutes").write_text(f"sender.test:127.0.0.1:{peer.port}\n")
    text = root / "away.txt"
    text.write_text("I am away until Monday.\n")
    qt(home, "user", "vacation", "alice@example.test", "--subject", "Away", "--message-file",
       str(text))  # fmt: skip
    qt(home, "user", "set", "bob@example.test", "--spam-folder", "junk")
    server = Server(home)
    try:
        yield home, server, peer
    finally:
        server.stop()
        peer.stop()


def send(server: Server, sender: str, rcpt: str, data: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
        client.sendmail(sender, [rcpt], data)


def test_one_reply_per_sender_none_to_lists_bulk_or_bounces(
    setup: tuple[Path, Server, SmtpPeer],
) -> None:
    home, server, peer = setup
    send(server, "dave@sender.test", "alice@example.test", message("lunch"))
    [reply] = peer.wait_for(1, 30)
    assert (reply.sender, reply.recipients) == ("", ("dave@sender.test",))
    assert b"\r\nAuto-Submitted: auto-replied\r\n" in reply.data
    assert b"\r\nIn-Reply-To: <lunch@sender.test>\r\n" in reply.data
    assert b"\r\nSubject: Away\r\n" in reply.data and b"From: alice@example.test" in reply.data
    assert b"I am away until Monday." in reply.data

    send(server, "dave@sender.test", "alice@example.test", message("again"))
    send(server, "erin@sender.test", "alice@example.test", message("list", "List-Id: <l.test>\r\n"))
    send(server, "fred@sender.test", "alice@example.test", message("bulk", "Precedence: bulk\r\n"))
    send(server, "", "alice@example.test", message("bounce"))
    # All five are in the INBOX; the log says why four got no reply.
    wait_until(lambda: len(maildir_files(home, "alice")) == 5, 30, "five messages for alice")
    log = home / "server.log"

    def skipped() -> int:
        return log.read_text(errors="replace").count("vacation.skipped")

    wait_until(lambda: skipped() == 4, 30, "four skipped replies")
    text = log.read_text(errors="replace")
    for why in ("answered already", "mailing list", "bulk precedence", "null sender"):
        assert f'why="{why}"' in text, why
    assert len(peer.messages) == 1


def test_spam_goes_to_junk_for_the_user_who_chose_it(
    setup: tuple[Path, Server, SmtpPeer],
) -> None:
    home, server, _ = setup
    spam = b"X-Spam-Flag: YES\r\nSubject: buy\r\n\r\ncheap\r\n"
    send(server, "spammer@spam.test", "bob@example.test", spam)
    send(server, "spammer@spam.test", "carol@example.test", spam)
    junk = home / "domains" / "example.test" / "bob" / "Maildir" / ".Junk"
    wait_until(lambda: (junk / "new").is_dir() and len(list((junk / "new").iterdir())) == 1, 30)
    assert (junk / "maildirfolder").exists()
    assert maildir_files(home, "bob") == []
    wait_until(lambda: len(maildir_files(home, "carol")) == 1, 30, "carol's INBOX copy")
