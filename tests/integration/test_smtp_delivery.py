"""Mail in over SMTP from real clients, through the queue, into Maildir."""

from __future__ import annotations

import os
import smtplib
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from .harness import Server, dialog, maildir_files, qt, wait_for_mail, wait_until

pytestmark = pytest.mark.integration


def swaks(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{port}", "--hide-all", "--silent", "2", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_swaks_single_recipient_lands_in_maildir(server: Server) -> None:
    result = swaks(
        server.port,
        "--to",
        "alice@example.test",
        "--from",
        "x@remote.test",
        "--header",
        "Subject: first",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    data = wait_for_mail(server.home, "alice", b"Subject: first")
    assert data.startswith(b"Return-Path: <x@remote.test>\nDelivered-To: alice@example.test\n")
    assert b"Received: from unknown (HELO " in data
    assert b"(127.0.0.1)\n  by mx.example.test with SMTP; " in data
    assert b"Subject: first" in data
    assert b"\r\n" not in data


def test_cr_in_envelope_refused_and_nothing_stored(server: Server) -> None:
    # issue 12 item 6: this MAIL got 250 and the stored Return-Path held the bare CR.
    replies = dialog(
        server.port,
        [
            b"HELO x",
            b"MAIL FROM:<a\rX-Injected: mailfrom@x.test>",
            b"MAIL FROM:<a@remote.test>",
            b"RCPT TO:<alice@example.test\rX-Injected: rcpt@x.test>",
            b"RCPT TO:<alice@example.test> NOTIFY=NEVER\rX-Injected: p",
            b"DATA",
        ],
    )
    assert replies[2:] == [
        b"501 bad address syntax (#5.1.7)",
        b"250 ok",
        b"501 bad address syntax (#5.1.3)",
        b"501 bad address syntax (#5.1.3)",
        b"503 RCPT first (#5.5.1)",
    ]
    assert qt(server.home, "queue", "list").stdout.strip() == b""


def test_smtplib_many_recipients(server: Server) -> None:
    users = ("alice", "bob", "carol")
    before = {u: len(maildir_files(server.home, u)) for u in users}
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
        refused = client.sendmail(
            "sender@remote.test",
            [f"{u}@example.test" for u in users],
            b"Subject: many\r\n\r\nhello all\r\n",
        )
    assert refused == {}
    for u in users:
        wait_until(lambda u=u: len(maildir_files(server.home, u)) > before[u], what=u)


def test_ehlo_advertises_extensions(server: Server) -> None:
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
        code, _ = client.ehlo("client.test")
        assert code == 250
        for ext in ("pipelining", "8bitmime", "size", "enhancedstatuscodes"):
            assert client.has_extn(ext), ext
        # init writes control/databytes 50000000 (issue 12 item 9; qmail's 0 was unlimited)
        assert client.esmtp_features["size"] == "50000000"


def test_pipelined_session_gets_replies_in_order(server: Server) -> None:
    before = len(maildir_files(server.home, "bob"))
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        f = sock.makefile("rb")
        assert f.readline().startswith(b"220 ")
        sock.sendall(
            b"EHLO pipe.test\r\nMAIL FROM:<p@remote.test>\r\nRCPT TO:<bob@example.test>\r\n"
            b"RCPT TO:<nobody@elsewhere.test>\r\nDATA\r\n"
        )
        lines = []
        while not lines or not lines[-1].startswith(b"354"):
            lines.append(f.readline())
        sock.sendall(b"Subject: piped\r\n\r\nbody\r\n.\r\nQUIT\r\n")
        final = [f.readline(), f.readline()]
    codes = [line[:4] for line in lines if not line.startswith(b"250-")]
    # EHLO (last line), MAIL, RCPT ok, RCPT relaying is fine for 127. (RELAYCLIENT), DATA
    assert codes == [b"250 ", b"250 ", b"250 ", b"250 ", b"354 "]
    assert final[0].startswith(b"250 2.0.0 ok ") and final[1].startswith(b"221 2.0.0 ")
    wait_until(lambda: len(maildir_files(server.home, "bob")) > before, what="bob")


def test_8bit_body_is_kept_byte_for_byte(server: Server) -> None:
    body = "Grüße aus Köln — ½ € 日本".encode()
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
        client.ehlo()
        client.sendmail(
            "s@remote.test",
            ["carol@example.test"],
            b"Subject: 8bit\r\n\r\n" + body + b"\r\n",
            mail_options=["BODY=8BITMIME"],
        )
    wait_for_mail(server.home, "carol", body + b"\n")


def test_remote_recipient_stays_queued_and_is_listed(server: Server) -> None:
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
        client.sendmail("s@remote.test", ["someone@far.test"], b"Subject: far\r\n\r\nx\r\n")
    # The harness's DNS answers nothing: the remote attempt is deferred, the mail stays.
    listing = qt(server.home, "queue", "list").stdout.decode()
    assert "someone@far.test" in listing
    assert "remote" in listing


def test_bounce_for_unknown_local_user_reaches_sender(server: Server) -> None:
    # chkuser refuses unknown users over SMTP; mail injected locally still bounces.
    qt(
        server.home,
        "sendmail",
        "-f",
        "alice@example.test",
        "nosuchuser@example.test",
        input=b"Subject: lost\n\nwhere\n",
    )
    bounce = wait_for_mail(server.home, "alice", b"Subject: lost")
    assert b"Return-Path: <>\n" in bounce
    assert b"Subject: failure notice" in bounce
    assert b"<nosuchuser@example.test>:\nSorry, no mailbox here by that name. (#5.1.1)" in bounce
    assert b"--- Below this line is a copy of the message." in bounce


def test_sendmail_and_queue_inject_deliver(server: Server) -> None:
    home: Path = server.home
    before = len(maildir_files(home, "bob"))
    qt(
        home,
        "sendmail",
        "-f",
        "root@example.test",
        "bob@example.test",
        input=b"Subject: via sendmail\n\nhi\n",
    )
    wait_until(lambda: len(maildir_files(home, "bob")) > before, what="sendmail")
    r, w = os.pipe()  # qmail-queue reads the envelope from its fd 1
    os.write(w, b"Finject@example.test\0Tbob@example.test\0\0")
    os.close(w)
    proc = subprocess.run(
        [sys.executable, "-m", "qtoaster", "queue-inject", "--home", str(home)],
        input=b"Subject: injected\n\nbody\n",
        stdout=r,
        timeout=60,
    )
    os.close(r)
    assert proc.returncode == 0
    wait_until(
        lambda: any(b"Subject: injected" in p.read_bytes() for p in maildir_files(home, "bob")),
        what="inject",
    )


def test_mail_queued_while_the_server_was_down_is_delivered_at_start(home: Path) -> None:
    # Issue 12: mail found in the queue at a restart must go at once, not after the
    # periodic rescan (30 s); tmp/ of the Maildir ends up empty.
    for n in range(4):
        qt(
            home,
            "sendmail",
            "-f",
            "s@far.test",
            "alice@example.test",
            input=f"Subject: early-{n}\n\nhi\n".encode(),
        )
    srv = Server(home)
    try:
        wait_until(lambda: len(maildir_files(home, "alice")) == 4, timeout=5, what="4 at once")
    finally:
        srv.stop()
    assert list((home / "domains/example.test/alice/Maildir/tmp").iterdir()) == []
