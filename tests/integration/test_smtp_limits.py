"""Time limits and infrastructure failures: 4xx, and nothing lost."""

from __future__ import annotations

import os
import shutil
import smtplib
import socket
from pathlib import Path

import pytest

from .harness import Server, maildir_files, qt, wait_for_mail

pytestmark = pytest.mark.integration


def test_idle_client_gets_qmails_timeout_and_is_dropped(home: Path) -> None:
    (home / "control" / "timeoutsmtpd").write_text("1\n")
    srv = Server(home)
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
            f = sock.makefile("rb")
            assert f.readline().startswith(b"220 ")
            sock.sendall(b"HELO slow.test\r\n")
            assert f.readline().startswith(b"250 ")
            # Say nothing more: the server must give up on us (spec 3.1).
            assert f.readline() == b"451 timeout (#4.4.2)\r\n"
            assert f.readline() == b""
    finally:
        srv.stop()


def test_unwritable_queue_answers_4xx_and_recovers(home: Path) -> None:
    srv = Server(home)
    tmp = home / "queue" / "tmp"
    try:
        shutil.rmtree(tmp)
        tmp.write_text("not a directory: every spool creation now fails\n")
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=30) as client:
            client.helo("c.test")
            client.mail("a@b.test")
            client.rcpt("alice@example.test")
            with pytest.raises(smtplib.SMTPDataError) as refused:
                client.data(b"Subject: refused\r\n\r\nx\r\n")
            # qmail-smtpd's answer to DATA when the queue cannot take the message.
            assert (refused.value.smtp_code, refused.value.smtp_error) == (
                451,
                b"qqt failure (#4.3.0)",
            )
            tmp.unlink()
            tmp.mkdir(mode=0o700)
            if os.geteuid() == 0:  # restored as root: the roles' owners back (decision 0007)
                qt(home, "config", "fix-owners")
            # Same connection, the disk is back: the client's retry gets through.
            client.sendmail("a@b.test", ["alice@example.test"], b"Subject: retried\r\n\r\nx\r\n")
        wait_for_mail(home, "alice", b"Subject: retried")
        assert not any(b"Subject: refused" in p.read_bytes() for p in maildir_files(home, "alice"))
    finally:
        srv.stop()


def test_roles_run_alone_with_serve(home: Path, tmp_path: Path) -> None:
    """`serve smtpd` and `serve send` are the same roles `run` supervises."""
    import os
    import signal
    import subprocess
    import sys

    from .harness import wait_until

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = home / "qtoaster.toml"
    text = settings.read_text().replace('"127.0.0.1:0"', f'"127.0.0.1:{port}"')
    settings.write_text(text)
    env = {**os.environ, "QTOASTER_HOME": str(home)}
    roles = [
        subprocess.Popen(
            [sys.executable, "-m", "qtoaster", "serve", role],
            env=env,
            stderr=subprocess.PIPE,
        )
        for role in ("smtpd", "send")
    ]
    try:

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False

        wait_until(listening, what="serve smtpd listening")
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.sendmail("a@b.test", ["bob@example.test"], b"Subject: alone\r\n\r\nx\r\n")
        wait_for_mail(home, "bob", b"Subject: alone")
    finally:
        for proc in roles:
            proc.send_signal(signal.SIGTERM)
        for proc in roles:
            assert proc.wait(30) == 0
            assert proc.stderr is not None
            proc.stderr.close()
    assert qt(home, "queue", "stat").stdout.startswith(b"messages in queue: 0")
