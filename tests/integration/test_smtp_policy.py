"""Relay control, size limits, reload and shutdown, against the started server."""

from __future__ import annotations

import signal
import smtplib
import socket
from pathlib import Path

import pytest

from .harness import Server, dialog, maildir_files, qt, wait_until

pytestmark = pytest.mark.integration


CHKUSER_NO_MAILBOX = b"550 sorry, no mailbox here by that name (#5.1.1 - chkusr)"
NOT_RCPTHOSTS = b"553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)"


@pytest.fixture
def norelay(home: Path) -> Path:
    (home / "tcp.smtp").write_text(":allow\n")
    return home


@pytest.mark.parametrize(
    "address",
    [
        b"victim@far.test",
        b"victim%far.test@example.test",  # % hack: a local part here, never a relay
        b"far.test!victim@example.test",  # bang path: a local part here
        b'"victim@far.test"@example.test',  # quoted local part: local, then unknown
        b"@example.test:victim@far.test",  # source route: stripped, far.test decides
        b"victim@[192.0.2.1]",  # IP literal that is not us
        b"victim@far.test.",
        b"victim@FAR.test",
    ],
)
def test_unauthenticated_client_cannot_relay(norelay: Path, address: bytes) -> None:
    srv = Server(norelay)
    try:
        replies = dialog(
            srv.port, [b"HELO x", b"MAIL FROM:<a@b.test>", b"RCPT TO:<" + address + b">"]
        )
        rcpt = replies[-1]
        if rcpt.startswith(b"250"):
            # Accepted only as mail for a local part of our own domain: it must not leave.
            with smtplib.SMTP("127.0.0.1", srv.port) as c:
                c.sendmail("a@b.test", [address.decode()], b"Subject: t\r\n\r\nx\r\n")
            listing = qt(norelay, "queue", "list").stdout.decode().splitlines()
            remote = [line.split()[-1] for line in listing if line.strip().startswith("remote")]
            # Only the bounce back to the sender may wait for remote delivery.
            assert set(remote) <= {"a@b.test"}, listing
        else:
            # Not ours: rcpthosts refuses; ours but no such user: chkuser refuses.
            assert rcpt in (NOT_RCPTHOSTS, CHKUSER_NO_MAILBOX)
    finally:
        srv.stop()


def test_relay_denied_then_allowed_by_tcp_smtp_after_sighup(norelay: Path) -> None:
    srv = Server(norelay)
    try:
        replies = dialog(
            srv.port,
            [b"MAIL FROM:<a@b.test>", b"RCPT TO:<x@far.test>", b"RCPT TO:<alice@example.test>"],
        )
        assert replies[2] == NOT_RCPTHOSTS
        assert replies[3] == b"250 ok"
        (norelay / "tcp.smtp").write_text('127.:allow,RELAYCLIENT=""\n:allow\n')
        (norelay / "control" / "smtpgreeting").write_text("reloaded.example.test\n")
        srv.signal(signal.SIGHUP)

        def reloaded() -> bool:
            return dialog(srv.port, [])[0] == b"220 reloaded.example.test ESMTP"

        wait_until(reloaded, what="reload")
        replies = dialog(srv.port, [b"MAIL FROM:<a@b.test>", b"RCPT TO:<x@far.test>"])
        assert replies[2] == b"250 ok"
    finally:
        srv.stop()


def test_oversize_message_refused_and_nothing_queued(home: Path) -> None:
    (home / "control" / "databytes").write_text("1000\n")
    srv = Server(home)
    try:
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=30) as client:
            client.ehlo()
            assert client.esmtp_features["size"] == "1000"
            code, msg = client.mail("a@b.test", ["SIZE=5000"])
            # After EHLO: RFC 2034's code in front of qmail's text (docs/decisions/0002).
            assert (code, msg) == (
                552,
                b"5.3.4 sorry, that message size exceeds my databytes limit (#5.3.4)",
            )
            client.rset()
            assert client.mail("a@b.test")[0] == 250
            assert client.rcpt("alice@example.test")[0] == 250
            code, msg = client.data(b"Subject: big\r\n\r\n" + b"x" * 3000 + b"\r\n")
            assert code == 552
            # A message within the limit still goes through on the same connection.
            client.sendmail("a@b.test", ["alice@example.test"], b"Subject: small\r\n\r\nok\r\n")
        wait_until(lambda: len(maildir_files(home, "alice")) == 1, what="small message")
        assert b"Subject: small" in maildir_files(home, "alice")[0].read_bytes()
        assert qt(home, "queue", "stat").stdout.decode().startswith("messages in queue: 0")
    finally:
        srv.stop()


def test_databytes_from_tcp_smtp_applies_per_connection(home: Path) -> None:
    (home / "tcp.smtp").write_text('127.:allow,RELAYCLIENT="",DATABYTES="100"\n')
    srv = Server(home)
    try:
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=30) as client:
            client.ehlo()
            assert client.esmtp_features["size"] == "100"
            with pytest.raises(smtplib.SMTPSenderRefused) as refused:
                client.sendmail("a@b.test", ["alice@example.test"], b"x" * 500)
            assert refused.value.smtp_code == 552  # SIZE=500 declared at MAIL
            assert client.mail("a@b.test")[0] == 250  # no SIZE: the limit holds at DATA
            assert client.rcpt("alice@example.test")[0] == 250
            assert client.data(b"x" * 500)[0] == 552
    finally:
        srv.stop()


def test_bare_lf_in_data_is_refused_and_connection_dropped(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(b"HELO x\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
        for _ in range(4):
            f.readline()
        sock.sendall(b"Subject: smuggle\r\n\r\nx\n.\nMAIL FROM:<evil@b.test>\r\n")
        assert f.readline() == b"451 See http://pobox.com/~djb/docs/smtplf.html.\r\n"
        assert f.readline() == b""


def test_sigterm_stops_gracefully(home: Path) -> None:
    srv = Server(home)
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=30) as client:
        client.sendmail("a@b.test", ["alice@example.test"], b"Subject: before\r\n\r\nx\r\n")
    assert srv.stop() == 0
    wait_until(
        lambda: (
            len(maildir_files(home, "alice")) == 1
            or qt(home, "queue", "stat").stdout.startswith(b"messages in queue: 1")
        )
    )


def test_looping_message_refused_after_100_received_lines(server: Server) -> None:
    hops = b"".join(b"Received: from hop%d by relay.test\r\n" % i for i in range(100))
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
        client.helo("c.test")
        client.mail("a@b.test")
        client.rcpt("alice@example.test")
        code, text = client.data(hops + b"Subject: loop\r\n\r\nx\r\n")
    assert (code, text) == (554, b"too many hops, this message is looping (#5.4.6)")


def test_own_ip_literal_is_rewritten_to_localiphost(norelay: Path) -> None:
    # spec 3.3 / 23.2: user@[our address] is mail for us, even without RELAYCLIENT.
    srv = Server(norelay)
    try:
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=30) as client:
            client.helo("c.test")
            for literal in ("[127.0.0.1]", "[0.0.0.0]"):
                client.sendmail("a@b.test", [f"postmaster@{literal}"], b"Subject: lit\r\n\r\nx\r\n")
        listing = qt(norelay, "queue", "list").stdout.decode()
        assert "[127.0.0.1]" not in listing and "[0.0.0.0]" not in listing
    finally:
        srv.stop()
