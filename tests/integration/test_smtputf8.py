"""SMTPUTF8 and IDNA on a real ``qtoaster run`` (issue 18): smtplib with SMTPUTF8 to a UTF-8
mailbox of a domain added as U-labels, swaks to that domain by its A-labels, and remote
delivery to recording peers with and without SMTPUTF8 (smtproutes points at them).

swaks 20201014 (Debian's) has no way to add SMTPUTF8 to MAIL, so the UTF-8 local parts are
sent with smtplib; swaks shows the A-label spelling reaching the U-label domain.
"""

from __future__ import annotations

import smtplib
import subprocess
from email.message import EmailMessage
from pathlib import Path

from tests.smtppeer import PeerBehaviour, SmtpPeer

from .harness import Server, maildir_files, make_home, qt, wait_until

BUECHER = "xn--bcher-kva.example"


def wait_for_mail(home: Path, user: str, needle: bytes, domain: str) -> bytes:
    found: list[bytes] = []

    def arrived() -> bool:
        files = maildir_files(home, user, domain)
        found[:] = [d for d in (p.read_bytes() for p in files) if needle in d]
        return bool(found)

    wait_until(arrived, 30, what=f"{needle!r} for {user}@{domain}")
    return found[0]


def test_utf8_mailbox_remote_peers_and_bounce(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    added = qt(home, "domain", "add", "bücher.example").stdout.decode()
    assert f"added domain {BUECHER} (bücher.example)" in added
    qt(home, "user", "add", "Jörg@bücher.example", "--password", "secret")
    assert (home / "domains" / BUECHER / "jörg" / "Maildir" / "new").is_dir()
    plain = SmtpPeer("127.0.0.1").start()  # 8BITMIME, no SMTPUTF8
    utf8 = SmtpPeer(
        "127.0.0.1", behaviour=PeerBehaviour(extensions=("PIPELINING", "8BITMIME", "SMTPUTF8"))
    ).start()
    (home / "control" / "smtproutes").write_text(
        f"far.test:127.0.0.1:{plain.port}\n"
        f"münchen.test:127.0.0.1:{plain.port}\n"  # a U-label route matches the A-label
        f"utf8.test:127.0.0.1:{utf8.port}\n"
    )
    server = Server(home)
    try:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
            client.ehlo("client.test")
            assert client.has_extn("smtputf8")
            # 1. a UTF-8 mailbox, its domain in U-labels, SMTPUTF8 on MAIL.
            client.sendmail(
                "alice@example.test",
                ["jörg@bücher.example"],
                b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\r\nhallo 1\r\n",
                mail_options=["SMTPUTF8"],
            )
            # 2. UTF-8 headers and a UTF-8 sender to a hop that lacks SMTPUTF8: a bounce.
            msg = EmailMessage()
            msg["From"] = "Jörg <jörg@bücher.example>"
            msg["To"] = "zoë@far.test"
            msg["Subject"] = "Grüße"
            msg.set_content("hallo 2\n")
            client.send_message(msg)  # smtplib adds SMTPUTF8 itself (non-ASCII addresses)
            # 3. to a hop that offers SMTPUTF8: MAIL carries it, the address goes as is.
            client.sendmail(
                "alice@example.test",
                ["zoë@utf8.test"],
                b"Subject: 3\r\n\r\nhallo 3\r\n",
                mail_options=["SMTPUTF8"],
            )
            # 4. an ASCII address whose domain's route is written in U-labels: smtproutes
            #    finds it (core/domain.py); no SMTPUTF8 needed, so the plain hop takes it.
            client.sendmail(
                "alice@example.test", ["bob@xn--mnchen-3ya.test"], b"Subject: 4\r\n\r\nhallo 4\r\n"
            )
        got = wait_for_mail(home, "jörg", b"hallo 1", domain=BUECHER)
        assert b"Delivered-To: " in got
        bounce = wait_for_mail(home, "jörg", b"does not support SMTPUTF8", domain=BUECHER)
        assert b"zo\xc3\xab@far.test" in bounce and b"(#5.6.7)" in bounce
        (to_utf8,) = utf8.wait_for(1, 30)
        assert to_utf8.recipients == ("zoë@utf8.test",)
        assert any(
            line.endswith(" SMTPUTF8") for line in utf8.transcript if line.startswith("MAIL")
        )
        (to_plain,) = plain.wait_for(1, 30)
        assert to_plain.recipients == ("bob@xn--mnchen-3ya.test",)
        assert b"hallo 4" in to_plain.data
        assert not any("zo" in line and "far.test" in line for line in plain.transcript)
        # swaks: the A-label spelling reaches the domain added as U-labels.
        swaks = subprocess.run(
            [
                "swaks",
                "--server",
                f"127.0.0.1:{server.port}",
                "--from",
                "alice@example.test",
                "--to",
                f"postmaster@{BUECHER.upper()}",
                "--body",
                "hallo swaks",
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert swaks.returncode == 0, swaks.stdout.decode(errors="replace")
        wait_for_mail(home, "postmaster", b"hallo swaks", domain=BUECHER)
        wait_until(lambda: b"messages in queue: 0\n" in qt(home, "queue", "stat").stdout, 30)
    finally:
        server.stop()
        plain.stop()
        utf8.stop()


def test_without_smtputf8_utf8_addresses_are_refused(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    server = Server(home)
    try:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
            client.ehlo("client.test")
            client.command_encoding = "utf-8"  # what an old client would do: no SMTPUTF8
            assert client.mail("jörg@example.test") == (
                553,
                b"5.6.7 sorry, non-ASCII address needs SMTPUTF8 (#5.6.7)",
            )
            assert client.mail("alice@example.test", ["SMTPUTF8"])[0] == 250
            client.send(b"RCPT TO:<bad\xff@example.test>\r\n")
            assert client.getreply() == (
                553,
                b"5.6.7 sorry, that address is not valid UTF-8 (#5.6.7)",
            )
    finally:
        server.stop()
