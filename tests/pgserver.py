"""A throw-away PostgreSQL server for tests: initdb, start on 127.0.0.1, fresh databases.

PostgreSQL refuses to run as root, so when the tests run as root (CI) every server
command runs as the ``postgres`` system user (runuser) and the cluster lives in a
directory that user owns.  Readiness is polled with a deadline (pg_ctl -w, then a real
connection), never slept for.  Tuned for speed, not safety: fsync off, trust auth,
listening on loopback only.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

APP_ROLE = "qtoaster"  # owns the test databases; not a superuser, like a real deployment
ADMIN_ROLE = "postgres"
START_TIMEOUT = 30.0


class PostgresMissing(RuntimeError):
    pass


def find_bin(name: str) -> str:
    """The path of a PostgreSQL program: on PATH, else in /usr/lib/postgresql/*/bin."""
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True):
        return candidate
    raise PostgresMissing(
        f"PostgreSQL's {name} was not found (PATH or /usr/lib/postgresql/*/bin): install"
        " the postgresql server package; the directory tests need a real PostgreSQL"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgServer:
    """One PostgreSQL cluster in a temporary directory, owned by the test session."""

    def __init__(self) -> None:
        self._initdb = find_bin("initdb")
        self._pg_ctl = find_bin("pg_ctl")
        self._as_root = os.geteuid() == 0
        if self._as_root and shutil.which("runuser") is None:
            raise PostgresMissing("running as root but runuser is missing (util-linux)")
        # Not under pytest's tmp_path: that is private to root, and the server must be
        # able to reach its files as the postgres user.
        self.root = Path(tempfile.mkdtemp(prefix="qtoaster-pg-"))
        if self._as_root:
            shutil.chown(self.root, user="postgres", group="postgres")
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.host = "127.0.0.1"
        self.port = _free_port()
        self._names = itertools.count(1)

    # -- life cycle -----------------------------------------------------------------

    def init(self) -> None:
        self._run(
            self._initdb,
            "-D", str(self.data), "-U", ADMIN_ROLE, "-A", "trust",
            "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions",
        )  # fmt: skip
        settings = {
            "listen_addresses": f"'{self.host}'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "16MB",
            "max_connections": "100",
        }
        self._configure(settings)

    def _configure(self, settings: dict[str, str]) -> None:
        # A later line of postgresql.conf overrides an earlier one.
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def move_port(self) -> None:
        """Take another free port (the last one was taken before the server bound it)."""
        self.port = _free_port()
        self._configure({"port": str(self.port)})

    def start(self) -> None:
        self._run(
            self._pg_ctl, "-D", str(self.data), "-l", str(self.log),
            "-w", "-t", str(int(START_TIMEOUT)), "start",
        )  # fmt: skip
        self._wait_ready()

    def stop(self) -> None:
        self._run(self._pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- databases ------------------------------------------------------------------

    def url(self, database: str, user: str = APP_ROLE) -> str:
        return f"postgresql://{user}@{self.host}:{self.port}/{database}"

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        """A superuser connection (autocommit) to the maintenance database."""
        return psycopg.connect(
            host=self.host, port=self.port, user=ADMIN_ROLE, dbname="postgres", autocommit=True
        )

    def create_role(self) -> None:
        with self.admin() as conn:
            conn.execute(f"CREATE ROLE {APP_ROLE} LOGIN")

    def create_database(self, name: str | None = None) -> str:
        """A new empty database owned by the application role; returns its name."""
        name = name or f"qt_test_{next(self._names)}"
        with self.admin() as conn:
            conn.execute(f"CREATE DATABASE {name} OWNER {APP_ROLE} TEMPLATE template0")
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            # FORCE (PostgreSQL 13+): a test that leaked a connection must not break others.
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    # -- helpers --------------------------------------------------------------------

    def _run(self, *argv: str) -> None:
        if self._as_root:
            argv = ("runuser", "-u", "postgres", "--", *argv)
        done = subprocess.run(
            argv, cwd=self.root, capture_output=True, text=True, timeout=START_TIMEOUT + 10
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}{done.stderr}{log}"
            )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                self.admin().close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.05)  # poll interval of a deadline-bounded readiness poll


def start_server() -> PgServer:
    """initdb, start, create the application role; the caller must destroy() it."""
    server = PgServer()
    try:
        server.init()
        for attempt in range(3):
            try:
                server.start()
                break
            except RuntimeError:
                if attempt == 2:
                    raise
                server.move_port()
        server.create_role()
    except BaseException:
        server.destroy()
        raise
    return server
