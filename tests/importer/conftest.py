"""A private MariaDB server for the ``--mysql`` tests: started once per session, only if a
test asks for it, listening on 127.0.0.1 only, stopped at the end."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .tree import dump_text

_DEADLINE_S = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _connect(port: int, database: str | None = None) -> object:
    import pymysql

    return pymysql.connect(host="127.0.0.1", port=port, user="root", database=database)


@pytest.fixture(scope="session")
def mariadb_port() -> Iterator[int]:
    """The port of a MariaDB holding database ``vpopmail`` with the rows of dump_text()."""
    server, install = shutil.which("mariadbd") or "/usr/sbin/mariadbd", "mariadb-install-db"
    if not os.path.exists(server) or shutil.which(install) is None:
        pytest.fail("mariadb-server is not installed (scripts/setup --test)", pytrace=False)
    # Not under pytest's tmp dirs: they are 0700 root, and the server runs as mysql.
    base = Path(tempfile.mkdtemp(prefix="qtoaster-mariadb-"))
    data = base / "data"
    as_root = ["--user=mysql"] if os.geteuid() == 0 else []
    if as_root:
        shutil.chown(base, "mysql", "mysql")
    subprocess.run(
        [install, "--no-defaults", f"--datadir={data}", "--auth-root-authentication-method=normal",
         "--skip-test-db", *as_root],
        check=True, capture_output=True,
    )  # fmt: skip
    port = _free_port()
    proc = subprocess.Popen(
        [server, "--no-defaults", f"--datadir={data}", f"--socket={base / 'sock'}",
         f"--pid-file={base / 'pid'}", f"--log-error={base / 'err.log'}", "--skip-networking=0",
         "--bind-address=127.0.0.1", f"--port={port}", "--skip-grant-tables", *as_root],
    )  # fmt: skip
    try:
        _wait_ready(proc, port, base)
        _load(port)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(base, ignore_errors=True)


def _wait_ready(proc: subprocess.Popen[bytes], port: int, base: Path) -> None:
    import pymysql

    deadline = time.monotonic() + _DEADLINE_S
    while True:
        try:
            _connect(port).close()  # type: ignore[attr-defined]
            return
        except pymysql.MySQLError:
            if proc.poll() is not None or time.monotonic() > deadline:
                log = (base / "err.log").read_text(errors="replace")[-2000:]
                pytest.fail(f"mariadbd did not start:\n{log}", pytrace=False)
            time.sleep(0.05)  # polling a readiness condition, with a deadline


def _load(port: int) -> None:
    conn = _connect(port)
    with conn.cursor() as cursor:  # type: ignore[attr-defined]
        cursor.execute("CREATE DATABASE vpopmail")
        cursor.execute("USE vpopmail")
        for statement in dump_text().split(";\n"):
            if statement.strip() and not statement.lstrip().startswith(("--", "/*")):
                cursor.execute(statement)
        # The older layout: one table per domain (vauth_munch_domain's name).
        cursor.execute(
            "CREATE TABLE example_org (pw_name char(32) NOT NULL PRIMARY KEY,"
            " pw_passwd char(128), pw_uid int, pw_gid int, pw_gecos char(48), pw_dir char(160),"
            " pw_shell char(20), pw_clear_passwd char(128))"
        )
        cursor.execute(
            "INSERT INTO example_org SELECT 'erin', pw_passwd, pw_uid, pw_gid, 'Erin',"
            " '/home/vpopmail/domains/example.org/erin', 'NOQUOTA', '' FROM vpopmail"
            " WHERE pw_name = 'dave'"
        )
    conn.commit()  # type: ignore[attr-defined]
    conn.close()  # type: ignore[attr-defined]
