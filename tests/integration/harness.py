"""Starting a real ``qtoaster run`` on loopback for integration tests.

Servers bind port 0 and announce the port on their ready line; every wait polls
with a deadline (no sleeps as synchronisation).
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

QTOASTER = [sys.executable, "-m", "qtoaster"]
DEAD_DNS = "127.0.0.1:9"  # the discard port: nothing answers DNS there
READY = re.compile(r"qtoaster ready: smtp 127\.0\.0\.\d+:(\d+)")
LISTENER = re.compile(
    r"(smtp|submission|smtps|pop3|pop3s|imap|imaps|metrics|http) 127\.0\.0\.\d+:(\d+)"
)


def qt(
    home: Path, *args: str, input: bytes | None = None, check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    """Run a qtoaster command on *home* (given as $QTOASTER_HOME, which every command reads)."""
    return subprocess.run(
        [*QTOASTER, *args],
        input=input,
        capture_output=True,
        check=check,
        timeout=60,
        env={**os.environ, "QTOASTER_HOME": str(home)},
    )


def reachable(home: Path) -> None:
    """Under root the roles run as their own users (decision 0007): they must be able to
    enter the directories above the home, which pytest makes 0700. Only the search bit is
    added, as an operator would for a home in a private place."""
    if os.geteuid() != 0:
        return
    for parent in home.absolute().parents:
        if not parent.exists():
            continue
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)


def make_home(
    root: Path,
    *,
    me: str = "mx.example.test",
    database_url: str | None = None,
    mailauth: bool = False,
    smtp: str = "127.0.0.1:0",
) -> Path:
    """A home with example.test and three users; on PostgreSQL if ``database_url``.
    Inbound SPF/DKIM/DMARC ([mailauth], on by default) only if ``mailauth``: with the
    dead DNS below every message would wait for its lookups and get a 451."""
    home = root / "home"
    configure(home, me=me, database_url=database_url, mailauth=mailauth, smtp=smtp)
    qt(home, "domain", "add", "example.test")
    for user in ("alice", "bob", "carol"):
        qt(home, "user", "add", f"{user}@example.test", "--password", "secret")
    return home


def configure(
    home: Path,
    *,
    me: str = "mx.example.test",
    database_url: str | None = None,
    mailauth: bool = False,
    smtp: str = "127.0.0.1:0",
) -> None:
    """``init`` a home with the tests' settings (see :func:`make_home`), without domains."""
    reachable(home)
    qt(home, "init", "--me", me, "--smtp", smtp)
    # chkuser's refusal delay (1 s, growing) would only slow the tests down.
    settings = home / "qtoaster.toml"
    text = settings.read_text()
    if database_url is not None:
        text = text.replace("[database]\n", f'[database]\nurl = "{database_url}"\n', 1)
    text = text.replace("error_delay = 1.0", "error_delay = 0").replace(
        "error_delay_increase = 0.3", "error_delay_increase = 0"
    )
    text = text.replace("failure_delay = 1.0", "failure_delay = 0.1")  # AUTH failures
    # Tests never send traffic off the machine: DNS goes to a loopback port nobody serves
    # (every lookup fails at once, temporarily) unless a test points it at its own server.
    text = text.replace("nameservers = []", f'nameservers = ["{DEAD_DNS}"]')
    text = text.replace("timeout = 30\n", "timeout = 2\n", 1)
    if not mailauth:
        text += "\n[mailauth]\nenabled = false\n"
    settings.write_text(text)


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.02)


def role_child(root: int, role: str) -> int:
    """The pid of the one ``serve ROLE`` child of the supervisor ``root`` (a server run with
    one worker of that role)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == root and b"serve" in cmdline and role.encode() in cmdline:
            return int(entry.name)
    raise AssertionError(f"no {role} worker under {root}")


def maildir_files(home: Path, user: str, domain: str = "example.test") -> list[Path]:
    new = home / "domains" / domain / user / "Maildir" / "new"
    return sorted(new.iterdir()) if new.is_dir() else []


class Server:
    def __init__(self, home: Path, *extra: str, workers: int = 2) -> None:
        self.home = home
        reachable(home)
        self.log = open(home / "server.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*QTOASTER, "run", "--home", str(home), "--workers", str(workers), *extra],
            stdout=subprocess.PIPE,
            stderr=self.log,
            start_new_session=True,
        )
        self.ports: dict[str, int] = {}  # every listener kind of the ready line -> its port
        self.port = self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> int:
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        buf = b""
        while time.monotonic() < deadline:
            if sel.select(timeout=0.2):
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                buf += chunk
                text = buf.decode(errors="replace")
                m = READY.search(text)
                if m:
                    for kind, port in LISTENER.findall(text.split("qtoaster ready:", 1)[1]):
                        self.ports.setdefault(kind, int(port))
                    return int(m.group(1))
        self.kill9()
        log = (self.home / "server.log").read_text(errors="replace")
        raise AssertionError(f"server did not become ready: {buf!r}\n{log}")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 45.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._cleanup()

    def kill9(self) -> None:
        """kill -9 the whole server: supervisor and every child."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        self._cleanup()

    def _cleanup(self) -> None:
        try:  # children die with the group; make sure none outlives the test
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.proc.stdout:
            self.proc.stdout.close()
        self.log.close()


def wait_for_mail(home: Path, user: str, needle: bytes, timeout: float = 20.0) -> bytes:
    """The first message in *user*'s Maildir containing *needle*, waiting for it to arrive."""
    found: list[bytes] = []

    def arrived() -> bool:
        found[:] = [d for d in (p.read_bytes() for p in maildir_files(home, user)) if needle in d]
        return bool(found)

    wait_until(arrived, timeout, what=f"{needle!r} for {user}")
    return found[0]


def dialog(port: int, commands: list[bytes]) -> list[bytes]:
    """Send each command, return the last reply line of each (greeting first)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        f = sock.makefile("rb")
        replies = [_reply(f)]
        for command in commands:
            sock.sendall(command + b"\r\n")
            replies.append(_reply(f))
    return replies


def _reply(f: socket.SocketIO | object) -> bytes:
    while True:
        line: bytes = f.readline()  # type: ignore[attr-defined]
        if line[3:4] != b"-":
            return line.rstrip(b"\r\n")
