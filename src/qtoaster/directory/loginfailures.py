"""Login failure counts in PostgreSQL, shared by the auth role of every host (docs/cluster.md).

The login throttle (qtoaster.auth.throttle) counts failed logins per client address and
per account. One host keeps them in memory; hosts that share one PostgreSQL directory
keep them here, in the table ``login_failures`` of the credential store's database (the
directory's own unless ``[database] credentials_url`` names another): the auth role is
the one role that writes there, and the one that counts failures. A failure made on
host A then slows the next attempt on host B.

The table (created on first use, under the same advisory lock as the directory's schema,
so two hosts starting at once do not both create it)::

    login_failures(kind, key, failures, last)   primary key (kind, key)

``kind`` is ``ip`` or ``account``; ``last`` is the wall-clock time (Unix seconds, from
``clock``: hosts keep their clocks in step with NTP, and a skew of seconds is nothing
against the 15-minute ``forget_after``) of the latest failure. It is transient state, not
directory data: no schema version, no backup needed, and ``DROP TABLE login_failures``
only forgets the counts.

Invariants:
- a count whose ``last`` is ``forget_after`` seconds old or older reads 0, and the next
  failure starts it over at 1 (the in-memory store's rule);
- one failure is one statement (an upsert), so two hosts counting at once lose nothing;
- the table stays bounded: at most every :data:`PURGE_EVERY` seconds a failure also
  deletes the rows older than ``forget_after``;
- database trouble raises DirectoryUnavailable (a TemporaryFailure), never a driver error.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable

from sqlalchemy import (
    Column,
    Engine,
    Float,
    Integer,
    MetaData,
    Table,
    Text,
    and_,
    case,
    delete,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import insert

from qtoaster.core.home import Home
from qtoaster.directory.base import database_errors, storable
from qtoaster.directory.engine import make_engine

PURGE_EVERY = 60.0  # seconds between deletions of forgotten rows (per process)
SCHEMA_LOCK = 7170432  # the directory's advisory lock (base.DirectoryBase.open)

metadata = MetaData()
login_failures = Table(
    "login_failures",
    metadata,
    Column("kind", Text, primary_key=True),
    Column("key", Text, primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("last", Float, nullable=False),
)


def shared_failures(
    home: Home, url: str | None, credentials_url: str | None = None
) -> SharedFailures | None:
    """The shared store when the credential store's database (``credentials_url``, else
    the directory's ``url``) is PostgreSQL; None otherwise (the throttle counts in memory).
    Connects lazily: a database that is down shows up at the first count."""
    chosen = credentials_url or url
    if chosen is None or not chosen.startswith(("postgresql", "postgres:")):
        return None
    return SharedFailures(make_engine(home, chosen))


def _stored_key(key: str) -> str:
    # PostgreSQL refuses NUL and undecodable text; such a name (never a real account)
    # is counted under its digest instead of failing the login as "temporary".
    if storable(key):
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class SharedFailures:
    """A :class:`qtoaster.auth.throttle.FailureStore` in PostgreSQL (thread-safe)."""

    def __init__(
        self,
        engine: Engine,
        *,
        forget_after: float = 900.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if engine.dialect.name != "postgresql":
            raise ValueError("shared login failures need PostgreSQL")
        if forget_after <= 0:
            raise ValueError("forget_after must be positive")
        self._engine = engine
        self._forget_after = forget_after
        self._clock = clock
        self._lock = threading.Lock()
        self._created = False
        self._purged = -PURGE_EVERY

    def current(self, kind: str, key: str) -> int:
        self._create()
        key = _stored_key(key)
        now = self._clock()
        query = select(login_failures.c.failures).where(
            login_failures.c.kind == kind,
            login_failures.c.key == key,
            login_failures.c.last > now - self._forget_after,
        )
        with database_errors(), self._engine.connect() as conn:
            found = conn.execute(query).scalar()
        return int(found or 0)

    def add(self, kind: str, key: str) -> None:
        self._create()
        key = _stored_key(key)
        now = self._clock()
        table = login_failures
        upsert = insert(table).values(kind=kind, key=key, failures=1, last=now)
        # In DO UPDATE the table's columns are the row already there: a count forgotten
        # by time starts over at 1, as in memory.
        fresh = table.c.last > now - self._forget_after
        upsert = upsert.on_conflict_do_update(
            index_elements=[table.c.kind, table.c.key],
            set_={"failures": case((fresh, table.c.failures + 1), else_=1), "last": now},
        )
        with database_errors(), self._engine.begin() as conn:
            conn.execute(upsert)
            if now - self._purged >= PURGE_EVERY:
                self._purged = now
                conn.execute(delete(table).where(table.c.last <= now - self._forget_after))

    def forget(self, kind: str, key: str) -> None:
        self._create()
        key = _stored_key(key)
        query = delete(login_failures).where(
            and_(login_failures.c.kind == kind, login_failures.c.key == key)
        )
        with database_errors(), self._engine.begin() as conn:
            conn.execute(query)

    def __len__(self) -> int:
        """How many addresses are counted now (all hosts)."""
        self._create()
        now = self._clock()
        query = (
            select(func.count())
            .select_from(login_failures)
            .where(login_failures.c.kind == "ip", login_failures.c.last > now - self._forget_after)
        )
        with database_errors(), self._engine.connect() as conn:
            return int(conn.execute(query).scalar() or 0)

    def close(self) -> None:
        self._engine.dispose()

    def _create(self) -> None:
        if self._created:
            return
        with self._lock:
            if self._created:
                return
            with database_errors(), self._engine.begin() as conn:
                conn.execute(text(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})"))
                metadata.create_all(conn, checkfirst=True)
            self._created = True
