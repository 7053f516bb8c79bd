"""A real clamd for tests: Debian's ``/usr/sbin/clamd`` with a private config and database.

No signature download is possible here (no freshclam), so the database is written by
us: the EICAR test file by MD5 (``.hdb``: matches only a whole 68-byte file, e.g. a
decoded attachment) and the EICAR string as a body signature (``.ndb``, target 0, any
offset: matches an EICAR line inside a message too).  clamd reports names from a
database that is not ClamAV's own with ``.UNOFFICIAL`` appended.

clamd runs in the foreground in its own session (so :func:`stop_group` can kill it and
anything it started), listens on 127.0.0.1 at a free port and/or on a unix socket in the
private directory, logs to a file there (never syslog) and stays the current user.
Readiness is ``zPING`` -> ``PONG`` polled against a deadline (no sleeps); a start takes
about 20 ms with this two-signature database.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

START_TIMEOUT = 30.0
CLAMD = "/usr/sbin/clamd"

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
EICAR_FILE_NAME = "Qtoaster-Test.EICAR-File"  # .hdb: the whole 68-byte file
EICAR_STRING_NAME = "Qtoaster-Test.EICAR-String"  # .ndb: the string anywhere


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (a server may still lose a race for it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn_group(args: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``args`` in a new session (process group) with its output appended to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            list(args), stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )


def stop_group(process: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """TERM the whole process group, KILL what is left after ``grace`` seconds, reap.

    Forked children (spamd's) are in the same group, so none outlives the test.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    # spamd's parent exits without reaping its children: they become zombies that init
    # reaps (here about once a second).  Wait only until no member is still running.
    deadline = time.monotonic() + grace
    while _running_members(process.pid) and time.monotonic() < deadline:
        time.sleep(0.01)  # polling the kernel for an exit we cannot wait on


def _running_members(pgid: int) -> list[int]:
    """Processes of group ``pgid`` that are not zombies (Linux /proc)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after ")"
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(stat.parent.name))
    return members


def write_database(directory: Path) -> None:
    digest = hashlib.md5(EICAR).hexdigest()
    (directory / "qtoaster-test.hdb").write_text(f"{digest}:{len(EICAR)}:{EICAR_FILE_NAME}\n")
    (directory / "qtoaster-test.ndb").write_text(f"{EICAR_STRING_NAME}:0:*:{EICAR.hex()}\n")


class ClamdServer:
    """``with ClamdServer() as clamd:``; then ``clamd.tcp_address`` / ``clamd.unix_address``."""

    def __init__(
        self, *, tcp: bool = True, unix: bool = True, stream_max_length: str = "25M"
    ) -> None:
        if not os.access(CLAMD, os.X_OK):
            raise RuntimeError(f"{CLAMD} missing: install the Debian package clamav-daemon")
        self.tcp, self.unix, self.stream_max_length = tcp, unix, stream_max_length
        self.port = 0
        self.started_in = 0.0  # seconds from spawn to the first PONG
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def tcp_address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def unix_address(self) -> str:
        assert self._dir is not None
        return str(self._dir / "clamd.sock")

    @property
    def address(self) -> str:
        """The TCP address if there is one, else the unix socket."""
        return self.tcp_address if self.tcp else self.unix_address

    def start(self) -> ClamdServer:
        self._dir = Path(tempfile.mkdtemp(prefix="qtoaster-clamd-"))
        (self._dir / "db").mkdir()
        write_database(self._dir / "db")
        began = time.monotonic()
        for _ in range(5):  # another process may take the port between check and bind
            self.port = free_port() if self.tcp else 0
            self._process = spawn_group([CLAMD, "-c", str(self._write_config())], self.log_path)
            if self._wait_ready():
                self.started_in = time.monotonic() - began
                return self
            stop_group(self._process)
        log = self.log()
        self.stop()
        raise RuntimeError(f"clamd did not start:\n{log}")

    def stop(self) -> None:
        if self._process is not None:
            stop_group(self._process)
            self._process = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    @property
    def log_path(self) -> Path:
        assert self._dir is not None
        return self._dir / "clamd.log"

    def log(self) -> str:
        """clamd's log so far (for failure reports)."""
        path = self._dir / "clamd.log" if self._dir else None
        return path.read_text(errors="replace") if path and path.exists() else ""

    def __enter__(self) -> ClamdServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _write_config(self) -> Path:
        assert self._dir is not None
        lines = [
            "Foreground yes",
            f"DatabaseDirectory {self._dir / 'db'}",
            "LogSyslog no",
            f"LogFile {self.log_path}",
            "LogTime yes",
            f"PidFile {self._dir / 'clamd.pid'}",
            f"StreamMaxLength {self.stream_max_length}",
            "ScanMail yes",
            "Bytecode no",  # no bytecode database here; saves a warning
        ]
        if self.tcp:
            lines += ["TCPAddr 127.0.0.1", f"TCPSocket {self.port}"]
        if self.unix:
            lines.append(f"LocalSocket {self.unix_address}")
        path = self._dir / "clamd.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def _ping(self) -> bool:
        family, target = (
            (socket.AF_INET, ("127.0.0.1", self.port))
            if self.tcp
            else (socket.AF_UNIX, self.unix_address)
        )
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.settimeout(1.0)
                sock.connect(target)
                sock.sendall(b"zPING\0")
                return sock.recv(16) == b"PONG\0"
        except OSError:
            return False

    def _wait_ready(self) -> bool:
        """PING until PONG; False if clamd exited (port taken?) or the deadline passed."""
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._ping():
                return True
            try:
                self._process.wait(timeout=0.005)  # the poll interval; also notices an exit
                return False
            except subprocess.TimeoutExpired:
                continue
        return False
