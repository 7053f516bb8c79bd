"""chkuser, aliases, catch-all and quotas end to end: real server, swaks and smtplib.

Every test here runs on SQLite and on PostgreSQL (conftest.py).
"""

from __future__ import annotations

import shutil
import signal
import smtplib
import subprocess
from pathlib import Path

import pytest

from .harness import (
    Server,
    dialog,
    maildir_files,
    make_home,
    qt,
    wait_for_mail,
    wait_until,
)

NO_MAILBOX = b"550 sorry, no mailbox here by that name (#5.1.1 - chkusr)"
SWAKS = shutil.which("swaks")


def swaks(port: int, to: str, *extra: str) -> str:
    assert SWAKS is not None, "swaks is installed by scripts/setup --test"
    result = subprocess.run(
        [
            SWAKS,
            "--server",
            "127.0.0.1",
            "--port",
            str(port),
            "--to",
            to,
            "--from",
            "sender@far.test",
            "--timeout",
            "20",
            *extra,
        ],
        capture_output=True,
        timeout=60,
    )
    return result.stdout.decode(errors="replace")


def test_unknown_recipient_refused_byte_for_byte_with_swaks(server: Server) -> None:
    # --protocol SMTP: HELO, so the reply carries no RFC 2034 prefix (qmail's bytes).
    out = swaks(server.port, "nobody@example.test", "--protocol", "SMTP")
    assert "<** 550 sorry, no mailbox here by that name (#5.1.1 - chkusr)" in out
    # After EHLO the same text, with the enhanced status code in front.
    out = swaks(server.port, "nobody@Example.TEST")
    assert "<** 550 5.1.1 sorry, no mailbox here by that name (#5.1.1 - chkusr)" in out


def test_known_user_extension_and_alias_accepted(server: Server) -> None:
    qt(server.home, "alias", "add", "sales@example.test", "bob@example.test")
    replies = dialog(
        server.port,
        [
            b"HELO x",
            b"MAIL FROM:<a@far.test>",
            b"RCPT TO:<alice@example.test>",
            b"RCPT TO:<ALICE-news@example.test>",
            b"RCPT TO:<sales@example.test>",
            b"RCPT TO:<nobody@example.test>",
        ],
    )
    assert replies[3:] == [b"250 ok", b"250 ok", b"250 ok", NO_MAILBOX]


def test_alias_forwards_to_a_local_user(server: Server) -> None:
    qt(server.home, "alias", "add", "info@example.test", "carol@example.test")
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
        client.sendmail("a@far.test", ["info@example.test"], b"Subject: via alias\r\n\r\nhi\r\n")
    message = wait_for_mail(server.home, "carol", b"Subject: via alias")
    assert b"Delivered-To: info@example.test\n" in message
    assert b"Delivered-To: carol@example.test\n" in message


def test_catchall_domain_accepts_and_delivers_everything(home: Path) -> None:
    qt(home, "domain", "add", "catch.test", "--catchall", "alice@example.test")
    srv = Server(home)
    try:
        replies = dialog(
            srv.port, [b"HELO x", b"MAIL FROM:<a@far.test>", b"RCPT TO:<whoever@catch.test>"]
        )
        assert replies[-1] == b"250 ok"
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=30) as client:
            client.sendmail("a@far.test", ["x@catch.test"], b"Subject: caught\r\n\r\nhi\r\n")
        wait_for_mail(home, "alice", b"Subject: caught")
        # "always" mode checks even catch-all domains (CHKUSER_START from tcp.smtp).
        (home / "tcp.smtp").write_text('127.:allow,RELAYCLIENT="",CHKUSER_START="ALWAYS"\n')
        srv.signal(signal.SIGHUP)

        def refused() -> bool:
            commands = [b"HELO x", b"MAIL FROM:<a@far.test>", b"RCPT TO:<whoever@catch.test>"]
            return dialog(srv.port, commands)[-1] == NO_MAILBOX

        wait_until(refused, what="CHKUSER_START=ALWAYS after SIGHUP")
    finally:
        srv.stop()


def test_wrong_recipient_limit_marks_the_session_intrusive(home: Path) -> None:
    (home / "tcp.smtp").write_text(
        '127.:allow,RELAYCLIENT="",CHKUSER_WRONGRCPTLIMIT="2",CHKUSER_RCPTLIMIT="5"\n'
    )
    srv = Server(home)
    try:
        replies = dialog(
            srv.port,
            [
                b"HELO x",
                b"MAIL FROM:<a@far.test>",
                b"RCPT TO:<alice@example.test>",
                b"RCPT TO:<x1@example.test>",
                b"RCPT TO:<x2@example.test>",  # reaches the threshold: still the 550
                b"RCPT TO:<bob@example.test>",  # intrusive from now on
            ],
        )
        assert replies[3:] == [
            b"250 ok",
            NO_MAILBOX,
            NO_MAILBOX,
            b"571 sorry, you are violating our security policies (#5.7.1 - chkuser)",
        ]
        # CHKUSER_RCPTLIMIT=5 counts every RCPT of the session: the 5th is refused.
        replies = dialog(
            srv.port,
            [b"HELO x", b"MAIL FROM:<a@far.test>"]
            + [b"RCPT TO:<alice@example.test>"] * 3
            + [b"RSET", b"MAIL FROM:<a@far.test>", b"RCPT TO:<bob@example.test>"] * 2,
        )
        assert replies[3:6] == [b"250 ok"] * 3
        assert replies[8] == b"250 ok"  # the 4th RCPT
        assert replies[11] == (
            b"571 sorry, reached maximum number of recipients for one session (#5.7.1 - chkuser)"
        )
    finally:
        srv.stop()


def test_quota_fills_up_refused_at_rcpt_and_bounced(home: Path) -> None:
    qt(home, "user", "add", "small@example.test", "--quota", "3000")
    (home / "tcp.smtp").write_text('127.:allow,RELAYCLIENT="",CHKUSER_MBXQUOTA="90"\n')
    srv = Server(home)
    try:
        body = b"Subject: filler\r\n\r\n" + b"x" * 1000 + b"\r\n"
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=30) as client:
            for _ in range(2):
                client.sendmail("alice@example.test", ["small@example.test"], body)
        wait_until(lambda: len(maildir_files(home, "small")) == 2, what="two fillers")
        # The third one passes RCPT (under 90%) but does not fit: bounced, not retried.
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=30) as client:
            client.sendmail("alice@example.test", ["small@example.test"], body)
        bounce = wait_for_mail(home, "alice", b"User over quota")
        assert b"<small@example.test>:\nUser over quota. (#5.1.1)" in bounce
        size = (home / "domains/example.test/small/Maildir/maildirsize").read_text()
        assert size.splitlines()[0] == "3000S"
        # Top it up past 90% by hand (maildirsize delta), then RCPT is refused (522).
        with open(home / "domains/example.test/small/Maildir/maildirsize", "a") as f:
            f.write("600 1\n")
        replies = dialog(
            srv.port, [b"HELO x", b"MAIL FROM:<a@far.test>", b"RCPT TO:<small@example.test>"]
        )
        assert replies[-1] == b"522 sorry, recipient mailbox is full (#5.2.2 - chkuser)"
    finally:
        srv.stop()


def test_directory_down_answers_4xx_never_5xx(home: Path) -> None:
    settings = home / "qtoaster.toml"
    text = settings.read_text()
    if 'url = "' in text:
        text = "\n".join(line for line in text.splitlines() if not line.startswith('url = "'))
    # A PostgreSQL that is not there: port 1 on loopback refuses at once.
    text = text.replace("[database]\n", '[database]\nurl = "postgresql://qt@127.0.0.1:1/none"\n')
    settings.write_text(text + "\n")
    srv = Server(home)
    try:
        replies = dialog(
            srv.port,
            [b"HELO x", b"MAIL FROM:<a@far.test>", b"RCPT TO:<alice@example.test>"],
        )
        assert replies[-1] == (
            b"451 system temporary unavailable, try again later (#4.3.0 - chkuser)"
        )
    finally:
        srv.stop()


def test_restored_sqlite_directory_serves_again_without_restart(tmp_path: Path) -> None:
    # Issue 12: users.sqlite3 corrupted, then restored byte for byte: the worker answered
    # 451 until a restart.  It must answer 250 again within seconds, with no SIGHUP.
    home = make_home(tmp_path)
    database = home / "users.sqlite3"
    srv = Server(home, workers=1)
    try:
        good = database.read_bytes()
        with open(database, "r+b") as f:  # in place: same inode, same size
            f.seek(100)
            f.write(b"\xff" * (len(good) - 100))
        probes = iter(range(10_000))

        def rcpt(to: bytes) -> bytes:
            return dialog(
                srv.port, [b"HELO x", b"MAIL FROM:<a@far.test>", b"RCPT TO:<" + to + b">"]
            )[-1]

        # A fresh address each time: no cached answer hides the database.
        wait_until(
            lambda: rcpt(b"probe%d@example.test" % next(probes)).startswith(b"451"),
            what="451 while the directory is corrupt",
        )
        database.write_bytes(good)
        wait_until(
            lambda: rcpt(b"alice@example.test") == b"250 ok",
            timeout=10,
            what="250 once the file is good again",
        )
    finally:
        srv.stop()


@pytest.mark.parametrize("mode", ["off"])
def test_chkuser_off_accepts_unknown_users(home: Path, mode: str) -> None:
    settings = home / "qtoaster.toml"
    settings.write_text(settings.read_text().replace('mode = "domain"', f'mode = "{mode}"'))
    srv = Server(home)
    try:
        replies = dialog(
            srv.port, [b"HELO x", b"MAIL FROM:<a@far.test>", b"RCPT TO:<nobody@example.test>"]
        )
        assert replies[-1] == b"250 ok"
    finally:
        srv.stop()
