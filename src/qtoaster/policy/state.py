"""The policy's shared state: greylisting's triplets and whitelisted clients, and the
rate limits' buckets, kept outside the smtpd workers so every worker (and, with
PostgreSQL, every host) sees the same (issue 18; docs/antispam.md).

One implementation, :class:`SqlPolicyState`, with statements that mean the same on SQLite
and PostgreSQL (``INSERT ... ON CONFLICT ... RETURNING``, named ``:parameters``), over one
of two thin connection layers:

- SQLite (the directory is SQLite): ``HOME/policy/state.sqlite3`` through the standard
  ``sqlite3`` module (a statement costs about 50 us there, five times less than through
  SQLAlchemy, and smtpd runs several per message), WAL with ``synchronous=NORMAL`` (a
  crash may forget the last commits: a greylisted client is greylisted again, a bucket
  refills early, nothing worse), written by smtpd alone, which owns the file
  (docs/security.md: nothing else reads it, nothing trusts it);
- PostgreSQL (the directory's ``[database] url``, through ``directory/engine.py``'s
  engine): tables ``qtoaster_greylist``, ``qtoaster_greyclient``, ``qtoaster_rate`` and
  ``qtoaster_rate_member`` in the directory's database, created on first use, shared by
  every host.

Rate limits are GCRA buckets (a limit of N per period holds N and refills one every
period/N seconds): one row per bucket, updated by one atomic statement, for one event or
a worker's batch (:meth:`SqlPolicyState.take_batch`, ``policy/reservations.py``).

Invariants: every method is one short transaction (SQLite: BEGIN IMMEDIATE, so writers
queue in busy_timeout instead of failing); growth is bounded: :meth:`expire` (called
at most every :data:`EXPIRE_EVERY` seconds by the writers themselves) deletes full
buckets, greylisted triplets past their retry window and anything unused for max_age.
Methods block: callers run them off the event loop.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, TextClause, text
from sqlalchemy.exc import SQLAlchemyError

from qtoaster.config.limitsettings import GreylistSettings
from qtoaster.core.errors import TemporaryFailure
from qtoaster.core.home import Home
from qtoaster.directory.engine import SQLITE_BUSY_MS, WRITE_OPTION, DirectoryError, make_engine
from qtoaster.policy.greylist import Decision, Triplet, decide, whitelisted

STATE_DIR = "policy"
STATE_FILE = "state.sqlite3"
EXPIRE_EVERY = 300.0  # seconds between clean-ups, per process
_EPSILON = 1e-6  # float slack in the bucket comparison

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS qtoaster_greylist (net TEXT NOT NULL, sender TEXT NOT NULL,"
    " rcpt TEXT NOT NULL, first_seen DOUBLE PRECISION NOT NULL,"
    " last_seen DOUBLE PRECISION NOT NULL, passed INTEGER NOT NULL,"
    " PRIMARY KEY (net, sender, rcpt))",
    "CREATE TABLE IF NOT EXISTS qtoaster_greyclient (net TEXT PRIMARY KEY,"
    " retries INTEGER NOT NULL, last_seen DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS qtoaster_rate (name TEXT PRIMARY KEY,"
    " tat DOUBLE PRECISION NOT NULL, ok INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS qtoaster_rate_member (name TEXT NOT NULL, member TEXT NOT NULL,"
    " expires DOUBLE PRECISION NOT NULL, PRIMARY KEY (name, member))",
)

# A GCRA bucket (limit N per period P, interval t = P/N): the theoretical arrival time
# moves t ahead per event; an event is refused while it would move past now + P. One
# statement serves single events and a worker's batches (policy/reservations.py): first
# :back unused events of an earlier batch are given back (never below now: a full bucket
# stays full), then :want events are granted while the bucket stays at most :half used,
# else one while it has room, else none; ``ok`` holds the number granted.
_BASE = (
    "(CASE WHEN qtoaster_rate.tat - :back * :t > :now"
    " THEN qtoaster_rate.tat - :back * :t ELSE :now END)"
)
_GRANT = (
    f"(CASE WHEN {_BASE} + :want * :t - :now <= :half THEN :want"
    f" WHEN {_BASE} + :t - :now <= :p THEN 1 ELSE 0 END)"
)
_TAKE = (
    "INSERT INTO qtoaster_rate (name, tat, ok) VALUES (:name, :now + :want * :t, :want)"
    f" ON CONFLICT (name) DO UPDATE SET ok = {_GRANT}, tat = {_BASE} + {_GRANT} * :t"
    " RETURNING ok"
)
_CLIENT = "SELECT retries, last_seen FROM qtoaster_greyclient WHERE net = :net"
_TOUCH_CLIENT = "UPDATE qtoaster_greyclient SET last_seen = :now WHERE net = :net"
_RETRIED = (
    "INSERT INTO qtoaster_greyclient (net, retries, last_seen) VALUES (:net, 1, :now)"
    " ON CONFLICT (net) DO UPDATE SET retries = qtoaster_greyclient.retries + 1,"
    " last_seen = :now"
)
_TRIPLET = (
    "SELECT first_seen, last_seen, passed FROM qtoaster_greylist"
    " WHERE net = :net AND sender = :sender AND rcpt = :rcpt"
)
_PUT_TRIPLET = (
    "INSERT INTO qtoaster_greylist (net, sender, rcpt, first_seen, last_seen, passed)"
    " VALUES (:net, :sender, :rcpt, :first, :last, :passed)"
    " ON CONFLICT (net, sender, rcpt) DO UPDATE SET first_seen = :first, last_seen = :last,"
    " passed = :passed"
)
_MEMBER = (
    "SELECT 1 FROM qtoaster_rate_member WHERE name = :name AND member = :member AND expires >= :now"
)
_PUT_MEMBER = (
    "INSERT INTO qtoaster_rate_member (name, member, expires) VALUES (:name, :member, :exp)"
    " ON CONFLICT (name, member) DO UPDATE SET expires = :exp"
)
_EXPIRE = (
    "DELETE FROM qtoaster_rate WHERE tat < :now",
    "DELETE FROM qtoaster_rate_member WHERE expires < :now",
    "DELETE FROM qtoaster_greylist WHERE last_seen < :old"
    " OR (passed = 0 AND first_seen < :unretried)",
    "DELETE FROM qtoaster_greyclient WHERE last_seen < :old",
)
# A whitelisted client's or passed triplet's last_seen is written at most this often.
TOUCH_EVERY = 3600.0


class StateUnavailable(TemporaryFailure):
    """The state could not be read or written: the check answers 451, try again later."""


class PolicyState(Protocol):
    """What the greylist and ratelimit checks ask of the shared state (all blocking)."""

    def greylist(
        self, net: str, sender: str, rcpt: str, now: float, settings: GreylistSettings
    ) -> Decision: ...

    def client_whitelisted(self, net: str, now: float, settings: GreylistSettings) -> bool: ...

    def pass_triplet(self, net: str, sender: str, rcpt: str, now: float) -> None: ...

    def take(self, name: str, now: float, limit: int, period: float) -> bool: ...

    def take_distinct(
        self, name: str, member: str, now: float, limit: int, period: float
    ) -> bool: ...

    def take_batch(
        self, name: str, now: float, limit: int, period: float, want: int, back: int = 0
    ) -> int: ...


class Transaction(Protocol):
    def row(self, sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None: ...

    def run(self, sql: str, params: dict[str, Any]) -> None: ...


class Backend(Protocol):
    def transaction(self) -> AbstractContextManager[Transaction]: ...

    def close(self) -> None: ...


class SqlPolicyState:
    def __init__(self, backend: Backend, settings: GreylistSettings | None = None) -> None:
        self._backend = backend
        self._expiry = settings or GreylistSettings()  # max_age and retry_window for expire
        self._next_expire = 0.0
        self._lock = threading.Lock()
        for attempt in range(3):  # hosts starting together may race to create the tables
            try:
                with backend.transaction() as tx:
                    for statement in _SCHEMA:
                        tx.run(statement, {})
                break
            except StateUnavailable:
                if attempt == 2:
                    raise

    @classmethod
    def open(cls, home: Home, url: str | None, settings: GreylistSettings) -> SqlPolicyState:
        """The state for a home whose directory is at ``url`` (None or SQLite: the file in
        ``home``'s policy/ directory, made if missing; PostgreSQL: that database)."""
        if url is None or url.startswith("sqlite"):
            folder = home.root / STATE_DIR
            try:
                folder.mkdir(mode=0o700, exist_ok=True)
            except OSError as exc:
                raise StateUnavailable(f"policy state {folder}: {exc.strerror}") from None
            return cls(SqliteBackend(folder / STATE_FILE), settings)
        try:
            engine = make_engine(home, url)
        except DirectoryError as exc:
            raise StateUnavailable(f"policy state: {exc}") from None
        return cls(EngineBackend(engine), settings)

    def close(self) -> None:
        self._backend.close()

    # -- greylisting ---------------------------------------------------------
    def client_whitelisted(self, net: str, now: float, settings: GreylistSettings) -> bool:
        if not settings.auto_whitelist:
            return False
        with self._transaction(now) as tx:
            return _whitelisted(tx, net, now, settings)

    def greylist(
        self, net: str, sender: str, rcpt: str, now: float, settings: GreylistSettings
    ) -> Decision:
        """One try of the triplet: the decision, with the triplet's and the client's rows
        updated in the same transaction."""
        key = {"net": net, "sender": sender, "rcpt": rcpt}
        with self._transaction(now) as tx:
            if settings.auto_whitelist and _whitelisted(tx, net, now, settings):
                return Decision(True, Triplet(now, now, True), whitelisted=True)
            row = tx.row(_TRIPLET, key)
            entry = None if row is None else Triplet(float(row[0]), float(row[1]), bool(row[2]))
            decision = decide(entry, now, settings)
            written = decision.entry
            if (
                entry is None
                or entry.passed != written.passed
                or entry.first_seen != written.first_seen
                or now - entry.last_seen >= TOUCH_EVERY
            ):
                values = {"first": written.first_seen, "last": written.last_seen}
                tx.run(_PUT_TRIPLET, {**key, **values, "passed": int(written.passed)})
            if decision.retried:
                tx.run(_RETRIED, {"net": net, "now": now})
            return decision

    def pass_triplet(self, net: str, sender: str, rcpt: str, now: float) -> None:
        """Record the triplet as passed (its mail passed SPF): later tries pass at once."""
        params = {"net": net, "sender": sender, "rcpt": rcpt, "first": now, "last": now}
        with self._transaction(now) as tx:
            tx.run(_PUT_TRIPLET, {**params, "passed": 1})

    # -- rate limits ---------------------------------------------------------
    def take(self, name: str, now: float, limit: int, period: float) -> bool:
        """One event for bucket ``name`` (``limit`` per ``period`` seconds): allowed?"""
        with self._transaction(now) as tx:
            return _take(tx, name, now, limit, period) > 0

    def take_batch(
        self, name: str, now: float, limit: int, period: float, want: int, back: int = 0
    ) -> int:
        """Give back ``back`` unused events of an earlier batch, then reserve up to ``want``
        events at once: ``want`` while the bucket stays at most half used, else one while
        it has room, else none. Returns how many were reserved (``want=0``: only give
        back)."""
        with self._transaction(now) as tx:
            return _take(tx, name, now, limit, period, want, back)

    def take_distinct(self, name: str, member: str, now: float, limit: int, period: float) -> bool:
        """An event that counts once per ``member`` within ``period`` (distinct recipients)."""
        with self._transaction(now) as tx:
            if tx.row(_MEMBER, {"name": name, "member": member, "now": now}) is not None:
                return True
            if not _take(tx, name, now, limit, period):
                return False
            tx.run(_PUT_MEMBER, {"name": name, "member": member, "exp": now + period})
            return True

    # -- housekeeping --------------------------------------------------------
    def expire(self, now: float) -> None:
        """Delete what no decision needs any more (bounded growth)."""
        params = {
            "now": now,
            "old": now - self._expiry.max_age,
            "unretried": now - self._expiry.retry_window,
        }
        with self._backend.transaction() as tx:
            for statement in _EXPIRE:
                tx.run(statement, params)

    def count(self, table: str) -> int:
        """Rows in one of the state's tables (tests, ``config check``)."""
        assert table in ("qtoaster_greylist", "qtoaster_greyclient", "qtoaster_rate")
        with self._backend.transaction() as tx:
            row = tx.row(f"SELECT count(*) FROM {table}", {})  # a known name, never input
        return int(row[0]) if row else 0

    def _transaction(self, now: float) -> AbstractContextManager[Transaction]:
        if now >= self._next_expire:
            with self._lock:
                due, self._next_expire = now >= self._next_expire, now + EXPIRE_EVERY
            if due:
                self.expire(now)
        return self._backend.transaction()


def _whitelisted(tx: Transaction, net: str, now: float, settings: GreylistSettings) -> bool:
    row = tx.row(_CLIENT, {"net": net})
    if row is None or not whitelisted(int(row[0]), float(row[1]), now, settings):
        return False
    if now - float(row[1]) >= TOUCH_EVERY:  # in use: kept past max_age
        tx.run(_TOUCH_CLIENT, {"net": net, "now": now})
    return True


def _take(
    tx: Transaction, name: str, now: float, limit: int, period: float, want: int = 1, back: int = 0
) -> int:
    params = {
        "name": name,
        "now": now,
        "t": period / limit,
        "p": period + _EPSILON,
        "half": (period if want <= 1 else period / 2) + _EPSILON,
        "want": want,
        "back": back,
    }
    row = tx.row(_TAKE, params)
    return int(row[0]) if row else 0


class SqliteBackend:
    """One ``sqlite3`` connection per thread on the state file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                conn.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_MS}")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
            except sqlite3.Error as exc:
                raise StateUnavailable(f"policy state {self.path}: {exc}") from None
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteTx(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StateUnavailable(f"policy state {self.path}: {exc}") from None

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()


class _SqliteTx:
    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def row(self, sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
        found: tuple[Any, ...] | None = self._conn.execute(sql, params).fetchone()
        return found

    def run(self, sql: str, params: dict[str, Any]) -> None:
        self._conn.execute(sql, params)


class EngineBackend:
    """A SQLAlchemy engine (PostgreSQL: the directory's, with its pool and timeouts)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine.execution_options(**{WRITE_OPTION: True})
        self._dispose = engine.dispose
        self._texts: dict[str, TextClause] = {}

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        try:
            with self._engine.begin() as conn:
                yield _EngineTx(conn, self._texts)
        except SQLAlchemyError as exc:
            original = getattr(exc, "orig", None) or type(exc).__name__
            raise StateUnavailable(f"policy state: {str(original).splitlines()[0]}") from None

    def close(self) -> None:
        self._dispose()


class _EngineTx:
    __slots__ = ("_conn", "_texts")

    def __init__(self, conn: Connection, texts: dict[str, TextClause]) -> None:
        self._conn = conn
        self._texts = texts

    def _text(self, sql: str) -> TextClause:
        clause = self._texts.get(sql)
        if clause is None:
            clause = self._texts[sql] = text(sql)
        return clause

    def row(self, sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
        found = self._conn.execute(self._text(sql), params).first()
        return None if found is None else tuple(found)

    def run(self, sql: str, params: dict[str, Any]) -> None:
        self._conn.execute(self._text(sql), params)


class LazyPolicyState:
    """A :class:`SqlPolicyState` opened on first use (in the thread that first asks): a
    worker whose checks never need the state never opens a file or a connection."""

    def __init__(self, opener: Callable[[], SqlPolicyState]) -> None:
        self._opener = opener
        self._state: SqlPolicyState | None = None
        self._lock = threading.Lock()

    def _get(self) -> SqlPolicyState:
        state = self._state
        if state is None:
            with self._lock:
                if self._state is None:
                    self._state = self._opener()
                state = self._state
        return state

    def greylist(
        self, net: str, sender: str, rcpt: str, now: float, settings: GreylistSettings
    ) -> Decision:
        return self._get().greylist(net, sender, rcpt, now, settings)

    def client_whitelisted(self, net: str, now: float, settings: GreylistSettings) -> bool:
        return self._get().client_whitelisted(net, now, settings)

    def pass_triplet(self, net: str, sender: str, rcpt: str, now: float) -> None:
        self._get().pass_triplet(net, sender, rcpt, now)

    def take(self, name: str, now: float, limit: int, period: float) -> bool:
        return self._get().take(name, now, limit, period)

    def take_distinct(self, name: str, member: str, now: float, limit: int, period: float) -> bool:
        return self._get().take_distinct(name, member, now, limit, period)

    def take_batch(
        self, name: str, now: float, limit: int, period: float, want: int, back: int = 0
    ) -> int:
        return self._get().take_batch(name, now, limit, period, want, back)

    def close(self) -> None:
        with self._lock:
            if self._state is not None:
                self._state.close()
