"""No backscatter (issue 12 item 5): what would bounce is refused at RCPT, and one
transaction delivers one copy per recipient.

Each case was reproduced against a started server before the fix: non-ASCII local parts
got 250 (the directory's lookup said "not hosted"), unknown users at control/me and at
our own IP literal got 250 and bounced later, and 1,200 RCPTs of one address delivered
1,000 copies.  Every test runs on SQLite and on PostgreSQL (conftest.py).
"""

from __future__ import annotations

import socket
from pathlib import Path

from .harness import Server, dialog, maildir_files, qt, wait_for_mail, wait_until

NO_MAILBOX = b"550 sorry, no mailbox here by that name (#5.1.1 - chkusr)"
NON_ASCII = b"553 sorry, non-ASCII address needs SMTPUTF8 (#5.6.7)"
START = [b"HELO x", b"MAIL FROM:<a@far.test>"]


def test_non_ascii_local_parts_refused_at_rcpt(server: Server) -> None:
    replies = dialog(
        server.port,
        [
            *START,
            b"RCPT TO:<nobody\xff@example.test>",  # not UTF-8 at all
            "RCPT TO:<nobodé@example.test>".encode(),  # UTF-8, but no SMTPUTF8 session
            "RCPT TO:<alice@exämple.test>".encode(),  # a non-ASCII domain: the same rule
            b"RCPT TO:<alice@example.test>",  # the transaction goes on
        ],
    )
    assert replies[3:] == [NON_ASCII, NON_ASCII, NON_ASCII, b"250 ok"]


def test_unknown_users_at_me_and_our_ip_literal_refused(server: Server) -> None:
    # The default home: defaultdomain is control/me, which the directory does not host,
    # so every local part there bounces; postmaster is still accepted (RFC 5321 4.5.1).
    replies = dialog(
        server.port,
        [
            *START,
            b"RCPT TO:<nobody@mx.example.test>",
            b"RCPT TO:<nobody@[127.0.0.1]>",  # rewritten to localiphost (control/me)
            b"RCPT TO:<Postmaster@mx.example.test>",
            b"RCPT TO:<postmaster@[127.0.0.1]>",
        ],
    )
    assert replies[3:] == [NO_MAILBOX] * 2 + [b"250 ok"] * 2


def test_locals_route_to_the_hosted_defaultdomain(home: Path) -> None:
    # As docs/directory.md advises: defaultdomain hosted, so me's users are its users.
    (home / "control" / "defaultdomain").write_text("example.test\n")
    srv = Server(home)
    try:
        replies = dialog(
            srv.port,
            [
                *START,
                b"RCPT TO:<nobody@mx.example.test>",
                b"RCPT TO:<nobody@[127.0.0.1]>",
                b"RCPT TO:<alice@mx.example.test>",
                b"RCPT TO:<bob@[127.0.0.1]>",
                b"RCPT TO:<postmaster@mx.example.test>",
                b"DATA",
                b"Subject: via me\r\n\r\nx\r\n.",
            ],
        )
        assert replies[3:8] == [NO_MAILBOX, NO_MAILBOX, b"250 ok", b"250 ok", b"250 ok"]
        assert replies[-1].startswith(b"250 ok ")
        wait_for_mail(home, "alice", b"Subject: via me")
        wait_for_mail(home, "bob", b"Subject: via me")
        wait_for_mail(home, "postmaster", b"Subject: via me")
    finally:
        srv.stop()


def test_duplicate_recipients_delivered_once(server: Server) -> None:
    home = server.home
    before = len(maildir_files(home, "carol"))
    rcpts = [b"RCPT TO:<carol@example.test>"] * 1200 + [b"RCPT TO:<carol@EXAMPLE.TEST>"]
    lines = [*START, *rcpts]
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(b"".join(line + b"\r\n" for line in lines))  # pipelined, as a bulk sender
        replies = [f.readline().rstrip(b"\r\n") for _ in lines]
        sock.sendall(b"DATA\r\n")
        assert f.readline().startswith(b"354")
        sock.sendall(b"Subject: dup\r\n\r\nonce\r\n.\r\nQUIT\r\n")
        assert f.readline().startswith(b"250 ok ")
    # Every duplicate gets 250, as Postfix answers; qmail's limit of 1,000 RCPTs per
    # transaction (the engine's 452) is unchanged.
    assert replies[2:1002] == [b"250 ok"] * 1000
    assert replies[1002:] == [b"452 too many recipients (#4.5.3)"] * 201
    wait_for_mail(home, "carol", b"Subject: dup")
    wait_until(lambda: qt(home, "queue", "stat").stdout.startswith(b"messages in queue: 0"))
    assert len(maildir_files(home, "carol")) == before + 1
