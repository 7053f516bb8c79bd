"""kill -9 the whole server while mail flows: nothing that got a 250 is lost."""

from __future__ import annotations

import random
import re
import smtplib
import threading
from pathlib import Path

import pytest

from .harness import Server, maildir_files, qt, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOTAL = 1000
SUBJECT = re.compile(rb"^Subject: crash-(\d+)$", re.M)


class Sender(threading.Thread):
    """Sends TOTAL numbered messages, reconnecting (to the current port) after failures."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.accepted: set[int] = set()
        self.lock = threading.Lock()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            n = 0
            while n < TOTAL:
                try:
                    with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as client:
                        while n < TOTAL:
                            body = f"Subject: crash-{n}\r\n\r\nbody {n}\r\n".encode()
                            client.sendmail("s@remote.test", ["alice@example.test"], body)
                            with self.lock:
                                self.accepted.add(n)
                            n += 1
                            if n % 7 == 0:
                                break  # new connection now and then
                except (OSError, smtplib.SMTPException):
                    pass  # the server was killed: retry message n on the next server
        except BaseException as exc:  # pragma: no cover - reported by the test
            self.error = exc

    def count(self) -> int:
        with self.lock:
            return len(self.accepted)


def delivered_numbers(home: Path) -> set[int]:
    found = set()
    for path in maildir_files(home, "alice"):
        m = SUBJECT.search(path.read_bytes())
        if m:
            found.add(int(m.group(1)))
    return found


def test_kill_9_while_receiving_loses_nothing(home: Path) -> None:
    rng = random.Random(20261125)
    srv = Server(home)
    sender = Sender(srv.port)
    sender.start()
    kills = 0
    for threshold in sorted(rng.sample(range(50, TOTAL - 100), 4)):
        wait_until(
            lambda t=threshold: sender.count() >= t or not sender.is_alive(),
            timeout=120,
            what=f"{threshold} accepted",
        )
        srv.kill9()
        kills += 1
        srv = Server(home)
        sender.port = srv.port
    sender.join(timeout=300)
    assert not sender.is_alive() and sender.error is None
    assert kills == 4
    try:
        wait_until(
            lambda: sender.accepted <= delivered_numbers(home),
            timeout=120,
            what="every accepted message in the Maildir",
        )
        wait_until(
            lambda: qt(home, "queue", "stat").stdout.startswith(b"messages in queue: 0"),
            timeout=60,
            what="empty queue",
        )
    finally:
        srv.stop()
    assert sender.accepted == set(range(TOTAL))
    assert list((home / "queue" / "tmp").iterdir()) == []
