"""The directory's database connection: one SQLAlchemy engine for SQLite or PostgreSQL,
and a :class:`ChangeWatcher` that tells caches when the directory changed.

SQLite is the embedded default (``users.sqlite3`` in the home); PostgreSQL serves several
hosts sharing one user base (DESIGN.md section 6) through the same Core code path.

Invariants:
- no message raised from here ever contains a database password (URLs are rendered with
  the password hidden, unparseable URLs are not echoed at all), and database errors never
  quote statement parameters (they can be password hashes or sealed secrets);
- every SQLite connection runs with a busy timeout, the rollback journal and foreign keys on;
- every PostgreSQL connection is pre-pinged on checkout, connects within
  :data:`CONNECT_TIMEOUT` seconds and aborts statements after :data:`STATEMENT_TIMEOUT_MS`;
- a change committed by any process on any host moves :meth:`ChangeWatcher.token` (SQLite:
  ``PRAGMA data_version``; PostgreSQL: ``NOTIFY`` on :data:`CHANNEL`, which writers send
  through :func:`notify_change` and PostgreSQL delivers at commit); None means "unknown,
  expire by time".
"""

from __future__ import annotations

import os
import selectors
import sqlite3
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from qtoaster.core.errors import TemporaryFailure
from qtoaster.core.home import Home
from qtoaster.directory.model import DirectoryError

__all__ = [
    "CHANNEL",
    "ChangeWatcher",
    "DirectoryError",
    "DirectoryUnavailable",
    "make_engine",
    "notify_change",
]

CHANNEL = "qtoaster_directory"
SQLITE_BUSY_MS = 5000
CONNECT_TIMEOUT = 5  # seconds (libpq connect_timeout)
STATEMENT_TIMEOUT_MS = 10_000
# Lookups come from the delivery threads (qmail's concurrencylocal, 10 by default) and the
# SMTP/POP3 auth threads: a few steady connections, bursts beyond them briefly.
POOL_SIZE = 5
MAX_OVERFLOW = 10
POOL_TIMEOUT = 10  # seconds to wait for a pooled connection before DirectoryUnavailable


class DirectoryUnavailable(TemporaryFailure):
    """The database could not be read or written: try again later."""


def make_engine(home: Home, url: str | None) -> Engine:
    """The engine for ``url`` (``None``: SQLite in ``home.database``, which must exist).

    ``postgresql://`` and ``postgres://`` URLs use psycopg 3.  Connects lazily: an
    unreachable server shows up on first use, not here.
    """
    if url is None:
        if not home.database.is_file():
            raise DirectoryError(f"no directory database at {home.database} (run qtoaster init)")
        url = f"sqlite:///{home.database}"
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            url = "postgresql+psycopg://" + url.removeprefix(plain)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        # The message of ArgumentError quotes the whole string, password included.
        raise DirectoryError(
            "invalid database url (expected e.g. postgresql://user@host/db)"
        ) from exc
    shown = parsed.render_as_string(hide_password=True)
    try:
        if parsed.get_backend_name() == "postgresql":
            engine = _postgresql_engine(parsed)
        else:
            engine = create_engine(parsed, hide_parameters=True)
    except ImportError as exc:
        raise DirectoryError(f"cannot use database {shown}: driver missing ({exc.name})") from exc
    except (SQLAlchemyError, TypeError, ValueError) as exc:
        reason = str(exc).replace(parsed.password, "***") if parsed.password else str(exc)
        raise DirectoryError(f"cannot use database {shown}: {reason}") from exc
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
    return engine


def _postgresql_engine(url: Any) -> Engine:
    # Settings the URL gives (?connect_timeout=...&options=...) win over ours.
    connect_args: dict[str, Any] = {"application_name": "qtoaster"}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = CONNECT_TIMEOUT
    if "options" not in url.query:
        connect_args["options"] = f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"
    return create_engine(
        url,
        hide_parameters=True,
        pool_pre_ping=True,  # a server restart must not cost the next lookup an error
        pool_size=POOL_SIZE,
        max_overflow=MAX_OVERFLOW,
        pool_timeout=POOL_TIMEOUT,
        connect_args=connect_args,
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite opens transactions itself, lazily, and not before a SAVEPOINT: releasing
    # one then commits, so a bulk add with per-row savepoints was not all-or-nothing.
    # SQLAlchemy's documented fix: the driver does no transaction handling, the "begin"
    # event issues BEGIN (_sqlite_begin).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_MS}")
    # The rollback journal, not WAL: under root the roles read this file without write
    # access to it or its directory (decision 0007), and a WAL reader must be able to create
    # the -shm file once the last writer has closed. Writers are the CLI; readers are many.
    cursor.execute("PRAGMA journal_mode = DELETE")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


# Execution option marking a connection that is about to write.
WRITE_OPTION = "qtoaster_write"


def _sqlite_begin(conn: Connection) -> None:
    # A writer takes the write lock at BEGIN (IMMEDIATE), so it waits in busy_timeout for
    # other writers; a deferred transaction that read first could only fail with "database
    # is locked" when it tries to write after another writer committed (WAL snapshot).
    immediate = conn.get_execution_options().get(WRITE_OPTION, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def notify_change(conn: Connection) -> None:
    """Announce a change from inside the write transaction on ``conn``.

    PostgreSQL queues the notification and delivers it only when the transaction commits
    (nothing on rollback; duplicates within one transaction are folded into one).  SQLite
    needs nothing: its data_version moves on every commit.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"NOTIFY {CHANNEL}"))


class ChangeWatcher:
    """Tells caches when the directory changed (any process, any host)."""

    def __init__(self, engine: Engine, *, ready_timeout: float = CONNECT_TIMEOUT) -> None:
        """Start watching; on PostgreSQL wait up to ``ready_timeout`` seconds for LISTEN."""
        self._sqlite: _SqliteVersion | None = None
        self._listener: _Listener | None = None
        if engine.dialect.name == "sqlite":
            database = engine.url.database
            if database and database != ":memory:" and not database.startswith("file:"):
                self._sqlite = _SqliteVersion(Path(database))
        elif engine.dialect.name == "postgresql":
            self._listener = _Listener(engine)
            self._listener.ready.wait(ready_timeout)

    def token(self) -> int | None:
        """A number that changes whenever the directory changes; None = unknown.

        PostgreSQL: cheap (no query); None while the listening connection is down (then a
        change may go unseen, so callers expire by time); it takes a new value on every
        reconnection.  SQLite: raises DirectoryUnavailable if the file cannot be read.
        """
        if self._sqlite is not None:
            return self._sqlite.version()
        if self._listener is not None:
            return self._listener.token
        return None

    def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
        if self._listener is not None:
            self._listener.stop()


class _SqliteVersion:
    """``PRAGMA data_version`` on a private connection that never writes: the value moves
    on every commit that any other connection (any process) makes."""

    def __init__(self, database: Path) -> None:
        self._lock = threading.Lock()
        # mode=rw: never create a database that is not there.
        uri = database.absolute().as_uri() + "?mode=rw"
        try:
            self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        except sqlite3.Error as exc:
            raise DirectoryUnavailable(f"directory database error: {exc}") from exc

    def version(self) -> int:
        try:
            with self._lock:
                row = self._conn.execute("PRAGMA data_version").fetchone()
        except sqlite3.Error as exc:
            raise DirectoryUnavailable(f"directory database error: {exc}") from exc
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class _Listener:
    """A daemon thread holding one psycopg connection that LISTENs on :data:`CHANNEL`.

    ``token`` counts notifications and (re)connections; it is None while disconnected.
    The thread waits on the connection's socket and on a wake-up pipe (for :meth:`stop`),
    reading notifications with libpq's non-blocking PQconsumeInput/PQnotifies.
    """

    MIN_BACKOFF = 0.1
    MAX_BACKOFF = 5.0

    def __init__(self, engine: Engine) -> None:
        _args, params = engine.dialect.create_connect_args(engine.url)
        self._params = {k: v for k, v in params.items() if k != "context"}
        self._params.setdefault("connect_timeout", CONNECT_TIMEOUT)
        self._params["application_name"] = "qtoaster-listen"
        self.token: int | None = None
        self.ready = threading.Event()
        self._count = 0
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="qt-directory-listen", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()
        os.write(self._wake_w, b"x")
        self._thread.join(CONNECT_TIMEOUT + 1)
        if not self._thread.is_alive():  # else it may still select on them: leak, not reuse
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _run(self) -> None:
        backoff = self.MIN_BACKOFF
        while not self._stopping.is_set():
            try:
                conn = self._connect()
            except Exception:
                # Unreachable or refused: try again later; stop() cuts the wait short.
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, self.MAX_BACKOFF)
                continue
            backoff = self.MIN_BACKOFF
            try:
                self._listen(conn)
            except Exception:
                pass  # connection lost: reconnect
            finally:
                self.token = None
                conn.close()

    def _connect(self) -> Any:
        import psycopg  # only PostgreSQL users need it

        conn = psycopg.connect(autocommit=True, **self._params)
        try:
            conn.execute(f"LISTEN {CHANNEL}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _listen(self, conn: Any) -> None:
        from psycopg.pq import ConnStatus

        # Changes made while we were away went unseen: a reconnection is a change too.
        self._count += 1
        self.token = self._count
        self.ready.set()
        pgconn = conn.pgconn
        with selectors.DefaultSelector() as selector:
            selector.register(pgconn.socket, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping.is_set():
                selector.select()
                if self._stopping.is_set():
                    return
                pgconn.consume_input()  # raises once the server has gone
                seen = 0
                while pgconn.notifies() is not None:
                    seen += 1
                if seen:
                    self._count += seen
                    self.token = self._count
                if pgconn.status != ConnStatus.OK:
                    return
