"""``qtoaster backup`` of a running server under load, ``restore`` into a fresh home, and
the restored server started: every message accepted before the backup began is there
exactly once, every user logs in with their password, Maildir checksums equal. On SQLite
and on a real PostgreSQL (the database is dropped and created again before the restore).
"""

from __future__ import annotations

import hashlib
import poplib
import re
import smtplib
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

from .harness import QTOASTER, Server, qt, reachable, wait_until

USERS = ("alice", "bob", "carol")
LOAD_COUNT = 240  # messages at most, over all senders
LOAD_SECONDS = 20.0
SENDERS = 2
SUBJECT = re.compile(rb"^Subject: backup-test (\d+)$", re.M)


class Load:
    """Bounded smtplib senders: each message has its own number in its Subject and goes to
    one user; ``accepted`` maps the number to the monotonic time its 250 came."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.accepted: dict[int, float] = {}
        self.stop = threading.Event()
        self._numbers = iter(range(LOAD_COUNT))
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._send) for _ in range(SENDERS)]
        self._deadline = time.monotonic() + LOAD_SECONDS

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(LOAD_SECONDS + 30)

    def _next(self) -> int | None:
        with self._lock:
            if self.stop.is_set() or time.monotonic() > self._deadline:
                return None
            return next(self._numbers, None)

    def _send(self) -> None:
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as smtp:
            while (n := self._next()) is not None:
                user = USERS[n % len(USERS)]
                body = (
                    f"From: load@example.test\r\nTo: {user}@example.test\r\n"
                    f"Subject: backup-test {n}\r\nMessage-ID: <backup-{n}@example.test>\r\n"
                    f"\r\nmessage {n}\r\n"
                )
                smtp.sendmail("load@example.test", [f"{user}@example.test"], body)
                with self._lock:
                    self.accepted[n] = time.monotonic()


def _numbers_in(data: bytes) -> list[int]:
    return [int(m) for m in SUBJECT.findall(data.replace(b"\r\n", b"\n"))]


def _maildir_files(home: Path) -> dict[str, Path]:
    found = {}
    for sub in ("new", "cur"):
        for path in (home / "domains").glob(f"*/*/Maildir/{sub}/*"):
            found[str(path.relative_to(home))] = path
    return found


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _backup(home: Path, dest: Path) -> tuple[int, int, int]:
    done = qt(home, "backup", str(dest))
    out = done.stdout.decode()
    m = re.search(r"(\d+) files, (\d+) copied .* (\d+) linked", out)
    assert m, out
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def _pop3_numbers(port: int, user: str) -> list[int]:
    pop = poplib.POP3("127.0.0.1", port, timeout=30)
    try:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # the test certificate
        pop.stls(context=ctx)
        pop.user(f"{user}@example.test")
        pop.pass_("secret")
        count, _ = pop.stat()
        numbers = []
        for i in range(1, count + 1):
            _, lines, _ = pop.top(i, 0)
            numbers += _numbers_in(b"\n".join(lines))
        return numbers
    finally:
        pop.quit()


@pytest.mark.slow  # a load, two servers, two backups: about a minute on 2 cores
def test_backup_under_load_then_restore(
    home: Path, tmp_path: Path, database: str | None, request: pytest.FixtureRequest
) -> None:
    dest = tmp_path / "backups"
    server = Server(home, workers=1)
    load = Load(server.port)
    try:
        load.start()
        wait_until(lambda: len(load.accepted) >= 30, what="the first messages accepted")
        started = time.monotonic()
        backup = subprocess.run(
            [*QTOASTER, "backup", str(dest), "--home", str(home), "--pause-timeout", "60"],
            capture_output=True,
            timeout=120,
            check=False,
        )
        load.join()
        assert backup.returncode == 0, backup.stderr.decode()
        assert b"the queue manager paused deliveries" in backup.stdout
        first_files, first_copied, _ = _backup_counts(backup.stdout)
        assert first_copied == first_files  # the first snapshot copies everything
        before = {n for n, t in load.accepted.items() if t < started}
        assert before
        # The second run, after the load: only what changed is copied.
        files2, copied2, linked2 = _backup(home, dest)
        assert linked2 > 0 and copied2 < files2
    finally:
        server.stop()
    log = (home / "server.log").read_text(errors="replace")
    assert "deliveries paused for a backup" in log and "deliveries resumed" in log

    snapshots = sorted(p.name for p in dest.iterdir())
    assert len(snapshots) == 2
    if database is not None:  # the directory is lost: the dump must bring it back
        pg = request.getfixturevalue("postgres_server")
        name = database.rsplit("/", 1)[1]
        pg.drop_database(name)
        pg.create_database(name)

    new = tmp_path / "elsewhere" / "newhome"
    reachable(new)
    dry = qt(new, "restore", str(dest), "--snapshot", snapshots[0], "--dry-run")
    assert b"would restore snapshot" in dry.stdout and not new.exists()
    done = qt(new, "restore", str(dest), "--snapshot", snapshots[0])
    assert b"restored snapshot" in done.stdout, done.stderr

    # Checksums: every Maildir file restored equals the original's (Maildir files never
    # change; the original server had no POP3 client to rename them).
    restored = _maildir_files(new)
    original = _maildir_files(home)
    for rel, path in restored.items():
        assert _sha(path) == _sha(original[rel]), rel

    # Exactly once, in the Maildirs or in the queue, before the restored server runs.
    seen: list[int] = []
    for path in restored.values():
        seen += _numbers_in(path.read_bytes())
    queued = list((new / "queue" / "mess").iterdir())
    for path in queued:
        seen += _numbers_in(path.read_bytes())
    assert len(seen) == len(set(seen)), "a message is in the backup twice"
    assert before <= set(seen), f"missing: {sorted(before - set(seen))}"

    # The restored server delivers what was queued; every user logs in with the password.
    text = (new / "qtoaster.toml").read_text()
    assert str(home) not in text
    restored_server = Server(new, "--pop3", "127.0.0.1:0", workers=1)
    try:
        mess = new / "queue" / "mess"
        wait_until(lambda: not any(mess.iterdir()), what="the restored queue delivered")
        delivered: list[int] = []
        for user in USERS:
            delivered += _pop3_numbers(restored_server.ports["pop3"], user)
    finally:
        restored_server.stop()
    assert sorted(delivered) == sorted(seen)


def _backup_counts(stdout: bytes) -> tuple[int, int, int]:
    m = re.search(rb"(\d+) files, (\d+) copied .* (\d+) linked", stdout)
    assert m, stdout
    return int(m.group(1)), int(m.group(2)), int(m.group(3))
