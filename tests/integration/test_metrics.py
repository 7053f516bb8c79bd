"""The Prometheus endpoint of a real ``qtoaster run --metrics`` (docs/metrics.md): scraped
with httpx, the counts equal to what the test did, the text passed by ``promtool check
metrics`` (Debian's prometheus package), counts kept across a worker killed with -9, and
the metrics role not running as root."""

from __future__ import annotations

import os
import poplib
import shutil
import signal
import smtplib
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .harness import Server, maildir_files, make_home, role_child, wait_until

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
SENT, REFUSED = 3, 2

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module: the tests run in file order, the exact counts first."""
    home = make_home(tmp_path_factory.mktemp("metrics"))
    srv = Server(home, "--metrics", "127.0.0.1:0", "--pop3", "127.0.0.1:0", workers=1)
    yield srv
    srv.stop()


def scrape(server: Server) -> str:
    response = httpx.get(f"http://127.0.0.1:{server.ports['metrics']}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return response.text


def samples(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def traffic(server: Server) -> None:
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
        for n in range(SENT):
            client.sendmail("s@far.test", ["alice@example.test"], b"Subject: m%d\r\n\r\nhi\r\n" % n)
        for _ in range(REFUSED):
            with pytest.raises(smtplib.SMTPRecipientsRefused):
                client.sendmail("s@far.test", ["nobody@example.test"], b"Subject: x\r\n\r\nx\r\n")
    wait_until(lambda: len(maildir_files(server.home, "alice")) == SENT, what="delivery")
    tls = ssl.create_default_context()
    tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE  # the home's own certificate
    good = poplib.POP3("127.0.0.1", server.ports["pop3"], timeout=30)
    good.stls(tls)
    good.user("alice@example.test")
    good.pass_("secret")
    good.quit()
    bad = poplib.POP3("127.0.0.1", server.ports["pop3"], timeout=30)
    bad.stls(tls)
    bad.user("alice@example.test")
    with pytest.raises(poplib.error_proto):
        bad.pass_("wrong")
    bad.quit()


def delivered(server: Server, count: int) -> Samples:
    """The scrape once the queue manager has counted ``count`` local deliveries."""
    found: Samples = {}

    def counted() -> bool:
        found.update(samples(scrape(server)))
        return value(found, "qtoaster_deliveries_total", result="success", channel="local") >= count

    wait_until(counted, what=f"{count} deliveries counted")
    return found


def test_counts_match_what_was_sent_and_promtool_passes(server: Server) -> None:
    traffic(server)
    found = delivered(server, SENT)
    assert value(found, "qtoaster_sessions_total", listener="smtp") == 1
    assert value(found, "qtoaster_sessions_total", listener="pop3") == 2
    assert value(found, "qtoaster_messages_accepted_total", via="queue") == SENT
    rejected = value(found, "qtoaster_smtp_rejections_total", stage="rcpt", reason="chkuser")
    assert rejected == REFUSED
    assert value(found, "qtoaster_deliveries_total", result="success", channel="local") == SENT
    assert value(found, "qtoaster_deliveries_total", result="failure", channel="local") == 0
    assert value(found, "qtoaster_delivery_delay_seconds_count", channel="local") == SENT
    assert value(found, "qtoaster_auth_attempts_total", protocol="pop3", result="success") == 1
    assert value(found, "qtoaster_auth_attempts_total", protocol="pop3", result="failure") == 1
    assert value(found, "qtoaster_tls_handshakes_total", result="success") == 2

    def queue_empty() -> bool:
        now = samples(scrape(server))
        return ("qtoaster_queue_messages", frozenset({("queue", "main")})) in now and value(
            now, "qtoaster_queue_messages", queue="main"
        ) == 0

    wait_until(queue_empty, what="the queue gauge at 0")
    text = scrape(server)
    checked = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == b"" and checked.stderr.strip() == b"", checked


def test_http_answers_only_get_metrics(server: Server) -> None:
    base = f"http://127.0.0.1:{server.ports['metrics']}"
    openmetrics = httpx.get(
        f"{base}/metrics", headers={"Accept": "application/openmetrics-text"}, timeout=10
    )
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.endswith("# EOF\n")
    assert httpx.get(f"{base}/", timeout=10).status_code == 404
    assert httpx.get(f"{base}/metrics/x", timeout=10).status_code == 404
    assert httpx.post(f"{base}/metrics", timeout=10).status_code == 405


@pytest.mark.skipif(os.geteuid() != 0, reason="roles change user only when started as root")
def test_metrics_role_is_not_root(server: Server) -> None:
    pid = role_child(server.proc.pid, "metrics")
    status = Path(f"/proc/{pid}/status").read_text()
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert all(int(uid) != 0 for uid in uids), status
    import pwd

    assert pwd.getpwuid(int(uids[0])).pw_name == "qtoaster-metrics"


def test_counters_survive_a_killed_worker(server: Server) -> None:
    before = delivered(server, SENT)  # the first test's traffic
    worker = role_child(server.proc.pid, "smtpd")
    os.kill(worker, signal.SIGKILL)

    def restarted() -> bool:
        try:
            return role_child(server.proc.pid, "smtpd") != worker
        except AssertionError:
            return False

    wait_until(restarted, what="a new smtpd worker")
    wait_until(lambda: _sent_one(server), what="the new worker accepting")
    after = delivered(server, SENT + 1)
    for name, labels in [
        ("qtoaster_sessions_total", {"listener": "smtp"}),
        ("qtoaster_messages_accepted_total", {"via": "queue"}),
        ("qtoaster_smtp_rejections_total", {"stage": "rcpt", "reason": "chkuser"}),
    ]:
        assert value(after, name, **labels) >= value(before, name, **labels), name
    assert value(after, "qtoaster_messages_accepted_total", via="queue") == SENT + 1


def _sent_one(server: Server) -> bool:
    try:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
            client.sendmail("s@far.test", ["alice@example.test"], b"Subject: after\r\n\r\nx\r\n")
    except (OSError, smtplib.SMTPException):
        return False
    return True
