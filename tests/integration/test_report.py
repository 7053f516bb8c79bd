"""The log of a real ``qtoaster run`` with ``[log] file``, read back by ``qtoaster report``:
its figures equal what this test sent (issue 16: logs and reports)."""

from __future__ import annotations

import json
import smtplib
import ssl
import stat
import subprocess
from pathlib import Path

import pytest
from tests.integration.harness import QTOASTER, Server, make_home, wait_until
from tests.smtppeer import PeerBehaviour, SmtpPeer

from qtoaster.report.summary import Summary

pytestmark = pytest.mark.skipif(
    not Path("/usr/bin/openssl").exists(), reason="qtoaster init makes its certificate with it"
)
MESSAGE = b"Subject: report test\r\n\r\nhello\r\n"


def _context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    return ctx


def _summary(log: Path) -> Summary:
    summary = Summary()
    if log.exists():
        for line in log.read_text(errors="replace").splitlines():
            summary.add_text(line)
    return summary


def test_report_of_a_real_run_counts_what_was_sent(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    settings = home / "qtoaster.toml"
    text = settings.read_text()
    assert "\n[log]\n" in text
    settings.write_text(text.replace("\n[log]\n", '\n[log]\nfile = "qtoaster.log"\n', 1))
    log = home / "qtoaster.log"
    peer = SmtpPeer(
        "127.0.0.1",
        behaviour=PeerBehaviour(
            rcpt_replies={
                "gone@far.test": "550 5.1.1 no such user here",
            }
        ),
    ).start()
    (home / "control" / "smtproutes").write_text(f"far.test:127.0.0.1:{peer.port}\n")
    srv = Server(home, "--submission", "127.0.0.1:0", workers=1)
    try:
        port, submission = srv.port, srv.ports["submission"]
        for _ in range(3):  # plain SMTP
            with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
                client.sendmail("sender@far.test", ["bob@example.test"], MESSAGE)
        for _ in range(2):  # STARTTLS
            with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
                client.starttls(context=_context())
                client.sendmail("tls@far.test", ["carol@example.test"], MESSAGE)
        for i in range(2):  # unknown users: refused at RCPT, nothing queued
            with (
                smtplib.SMTP("127.0.0.1", port, timeout=20) as client,
                pytest.raises(smtplib.SMTPRecipientsRefused),
            ):
                client.sendmail("sender@far.test", [f"nobody{i}@example.test"], MESSAGE)
        with smtplib.SMTP("127.0.0.1", submission, timeout=20) as client:
            client.starttls(context=_context())
            client.ehlo()
            client.user, client.password = "alice@example.test", "wrong"
            with pytest.raises(smtplib.SMTPAuthenticationError):  # one mechanism: one try
                client.auth("PLAIN", client.auth_plain)
            client.user, client.password = "alice@example.test", "secret"
            client.auth("PLAIN", client.auth_plain)
            # refused by the far host: a failure, and a bounce to alice (delivered locally)
            client.sendmail("alice@example.test", ["gone@far.test"], MESSAGE)

        def all_done() -> bool:
            s = _summary(log)
            return s.delivered >= 6 and s.bounced >= 1 and s.failed >= 1

        wait_until(all_done, 60, "every delivery and the bounce in the log")
    finally:
        srv.stop()
        peer.stop()

    assert stat.S_IMODE(log.stat().st_mode) == 0o640
    out = subprocess.run(
        [*QTOASTER, "report", "--json", str(log)], capture_output=True, check=True, timeout=60
    ).stdout
    d = json.loads(out)
    assert d["received"] == 6  # 3 plain + 2 STARTTLS + 1 submission
    assert d["delivered"] == 6  # 3 bob + 2 carol + the bounce to alice
    assert (d["failed"], d["bounced"]) == (1, 1)
    assert [(r["reason"], r["count"]) for r in d["rejected_by_reason"]] == [("chkuser", 2)]
    assert d["rejected"] == 2
    assert d["tls_received"] == 3
    assert d["sessions"] == 8 and d["tls_sessions"] == 3
    assert d["logins_ok"] == {"smtp": 1} and d["logins_failed"] == {"smtp": 1}
    assert {"name": "sender@far.test", "count": 3} in d["top_senders"]
    assert {"name": "bob@example.test", "count": 3} in d["top_recipients"]
    assert d["top_clients"] == [{"name": "127.0.0.1", "count": 6}]
    assert d["delay_median"] is not None and d["delay_median"] >= 0
