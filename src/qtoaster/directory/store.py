"""The directory: domains and users in SQLite or PostgreSQL through one code path.

SQLAlchemy Core on a synchronous engine (DESIGN.md section 6).  A :class:`Directory` is safe
to share between threads: every call checks a connection out of the engine's pool for the
duration of one statement or transaction (SQLite: one connection per thread at a time, WAL
journal so readers never wait for the writer, a busy timeout so writers queue).

Invariants:
- names are validated and lower-cased before they reach the database (schema.py);
- a lookup on the delivery path is one indexed query;
- database trouble raises :class:`DirectoryUnavailable` (a TemporaryFailure: 4xx, retry),
  a request that can never succeed raises :class:`DirectoryError`;
- mailboxes on disk are created here on user add, but removed only by the CLI after
  confirmation.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Row, create_engine, event, func, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from qtoaster.core.clock import Clock, SystemClock
from qtoaster.core.envelope import split_address
from qtoaster.core.errors import QtoasterError, TemporaryFailure
from qtoaster.core.home import Home
from qtoaster.directory import passwords, schema
from qtoaster.directory.schema import UserFlag, domains, users

# RFC 1035 2.3.1 labels (letters, digits, inner hyphens), at most 63 octets each, 253 in all.
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
# RFC 5322 3.2.3 atext and dots, minus '/' (the local part names a directory on disk).
_LOCAL = re.compile(r"^[a-z0-9!#$%&'*+=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+=?^_`{|}~-]+)*$")
_SQLITE_BUSY_MS = 5000


class DirectoryError(QtoasterError):
    """A directory request that cannot succeed: unknown or duplicate name, invalid address."""


class DirectoryUnavailable(TemporaryFailure):
    """The database could not be read or written: try again later."""


@dataclass(frozen=True, slots=True)
class UserInfo:
    address: str
    domain: str
    local_part: str
    quota: int | None  # bytes; None = unlimited
    flags: UserFlag
    maildir: Path  # absolute
    has_password: bool
    created: int  # Unix seconds


def valid_domain(name: str) -> str:
    """``name`` lower-cased, or DirectoryError if it is not a DNS host name."""
    lowered = name.lower()
    labels = lowered.split(".")
    if len(lowered) > 253 or not all(_LABEL.match(label) for label in labels):
        raise DirectoryError(f"invalid domain name: {name!r}")
    return lowered


def valid_address(address: str) -> tuple[str, str]:
    """``(local, domain)`` lower-cased, or DirectoryError if not a mailbox address."""
    local, domain = split_address(address)
    lowered = local.lower()
    if "@" not in address or len(lowered) > 64 or not _LOCAL.match(lowered):
        raise DirectoryError(f"invalid address: {address!r}")
    return lowered, valid_domain(domain)


def create_directory(home: Home) -> None:
    """Create ``users.sqlite3`` in ``home`` with the current schema (idempotent, 0600)."""
    home.root.mkdir(parents=True, exist_ok=True)
    # The file holds password hashes: create it private before SQLite opens it (SQLite
    # gives its -wal and -shm files the same permissions).
    os.close(os.open(home.database, os.O_CREAT | os.O_WRONLY, 0o600))
    Directory.open(home).close()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_MS}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _make_engine(home: Home, url: str | None) -> Engine:
    if url is None:
        if not home.database.is_file():
            raise DirectoryError(f"no directory database at {home.database} (run qtoaster init)")
        url = f"sqlite:///{home.database}"
    elif url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    try:
        engine = create_engine(url)
    except (ImportError, SQLAlchemyError) as exc:
        raise DirectoryError(f"cannot use database {url.split('://')[0]}: {exc}") from exc
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


@contextmanager
def _database() -> Iterator[None]:
    try:
        yield
    except IntegrityError:
        raise
    except SQLAlchemyError as exc:
        raise DirectoryUnavailable(f"directory database error: {exc}") from exc


class Directory:
    def __init__(self, home: Home, engine: Engine, clock: Clock) -> None:
        self._home = home
        self._engine = engine
        self._clock = clock
        asked, real = domains.alias("asked"), domains.alias("real")
        # One probe of domains.name, one of users(domain_id, local_part), one primary key
        # probe for the real domain's name: an alias domain resolves to its target domain's
        # users in the same query.
        self._lookup = (
            select(users, real.c.name.label("domain_name"))
            .select_from(asked)
            .join(users, users.c.domain_id == func.coalesce(asked.c.alias_of, asked.c.id))
            .join(real, real.c.id == users.c.domain_id)
        )
        self._asked = asked
        self._version_lock = threading.Lock()
        self._version_conn: sqlite3.Connection | None = None
        if engine.dialect.name == "sqlite" and engine.url.database:
            # A connection that never writes: its data_version moves on every commit that
            # any other connection (any process) makes, so caches know when to forget.
            self._version_conn = sqlite3.connect(engine.url.database, check_same_thread=False)

    @classmethod
    def open(cls, home: Home, url: str | None = None, *, clock: Clock | None = None) -> Directory:
        """Open the directory: SQLite in ``home.database`` or ``url`` (SQLAlchemy URL form).

        Creates missing tables and runs pending migrations; DirectoryError if the database
        is missing (SQLite) or newer than this program.
        """
        engine = _make_engine(home, url)
        try:
            with _database(), engine.begin() as conn:
                version = schema.stored_version(conn)
                if version is None:
                    schema.install(conn)
                elif version > schema.SCHEMA_VERSION:
                    raise DirectoryError(
                        f"directory schema version {version} is newer than this qtoaster"
                        f" ({schema.SCHEMA_VERSION})"
                    )
                elif version < schema.SCHEMA_VERSION:
                    schema.upgrade(conn, version)
        except BaseException:
            engine.dispose()
            raise
        return cls(home, engine, clock or SystemClock())

    def close(self) -> None:
        if self._version_conn is not None:
            self._version_conn.close()
        self._engine.dispose()

    def change_token(self) -> int | None:
        """A number that changes whenever the directory changes (SQLite), else None.

        Lets callers cache lookups exactly; None means they must expire them by time.
        """
        if self._version_conn is None:
            return None
        try:
            with self._version_lock:
                row = self._version_conn.execute("PRAGMA data_version").fetchone()
        except sqlite3.Error as exc:
            raise DirectoryUnavailable(f"directory database error: {exc}") from exc
        return int(row[0])

    # -- domains ---------------------------------------------------------------------

    def add_domain(self, name: str) -> None:
        domain = valid_domain(name)
        try:
            with _database(), self._engine.begin() as conn:
                conn.execute(domains.insert().values(name=domain, created=self._now()))
        except IntegrityError as exc:
            raise DirectoryError(f"domain {domain} already exists") from exc

    def delete_domain(self, name: str) -> None:
        """Remove the domain, its alias domains, users and aliases (not its files)."""
        domain = name.lower()
        with _database(), self._engine.begin() as conn:
            domain_id = conn.execute(select(domains.c.id).where(domains.c.name == domain)).scalar()
            if domain_id is None:
                raise DirectoryError(f"unknown domain: {domain}")
            # Explicit deletes rather than ON DELETE CASCADE: the same on every engine.
            ids = select(domains.c.id).where(
                (domains.c.id == domain_id) | (domains.c.alias_of == domain_id)
            )
            conn.execute(schema.aliases.delete().where(schema.aliases.c.domain_id.in_(ids)))
            conn.execute(users.delete().where(users.c.domain_id.in_(ids)))
            conn.execute(domains.delete().where(domains.c.alias_of == domain_id))
            conn.execute(domains.delete().where(domains.c.id == domain_id))

    def domains(self) -> list[str]:
        with _database(), self._engine.connect() as conn:
            return list(conn.execute(select(domains.c.name).order_by(domains.c.name)).scalars())

    def hosts_domain(self, name: str) -> bool:
        query = select(domains.c.id).where(domains.c.name == name.lower())
        with _database(), self._engine.connect() as conn:
            return conn.execute(query).first() is not None

    # -- users -----------------------------------------------------------------------

    def add_user(self, address: str, password: str | None, quota: int | None = None) -> None:
        """Add a user and create its Maildir (0700); ``quota`` None = the domain's default."""
        local, domain = valid_address(address)
        if quota is not None and quota < 0:
            raise DirectoryError(f"invalid quota: {quota}")
        password_hash = passwords.hash_password(password) if password is not None else None
        maildir = self._home.maildir(domain, local)
        with _database(), self._engine.begin() as conn:
            row = conn.execute(select(domains).where(domains.c.name == domain)).first()
            if row is None:
                raise DirectoryError(f"unknown domain: {domain}")
            if row.alias_of is not None:
                raise DirectoryError(f"domain {domain} is an alias; add the user to its target")
            self._check_room(conn, row)
            try:
                conn.execute(
                    users.insert().values(
                        domain_id=row.id,
                        local_part=local,
                        password_hash=password_hash,
                        quota=quota if quota is not None else row.default_quota,
                        flags=0,
                        maildir=str(maildir.relative_to(self._home.root)),
                        created=self._now(),
                    )
                )
            except IntegrityError as exc:
                raise DirectoryError(f"user {local}@{domain} already exists") from exc
            # Inside the transaction: if the Maildir cannot be made, the user is not added.
            try:
                _make_maildir(maildir)
            except OSError as exc:
                raise DirectoryError(f"cannot create {maildir}: {exc.strerror}") from exc

    def delete_user(self, address: str) -> None:
        local, domain = split_address(address)
        with _database(), self._engine.begin() as conn:
            user_id = conn.execute(
                select(users.c.id)
                .join(domains, users.c.domain_id == domains.c.id)
                .where(domains.c.name == domain, users.c.local_part == local.lower())
            ).scalar()
            if user_id is None:
                raise DirectoryError(f"unknown user: {address}")
            conn.execute(users.delete().where(users.c.id == user_id))

    def users(self, domain: str | None = None) -> list[UserInfo]:
        """Every user (of ``domain`` if given; DirectoryError if it is unknown), sorted."""
        query = select(users, domains.c.name.label("domain_name")).join(
            domains, users.c.domain_id == domains.c.id
        )
        with _database(), self._engine.connect() as conn:
            if domain is not None:
                known = select(domains.c.id).where(domains.c.name == domain.lower())
                if conn.execute(known).first() is None:
                    raise DirectoryError(f"unknown domain: {domain.lower()}")
                query = query.where(domains.c.name == domain.lower())
            rows = conn.execute(query.order_by(domains.c.name, users.c.local_part)).all()
        return [self._info(row) for row in rows]

    def user(self, address: str) -> UserInfo | None:
        """The user with exactly this address, or None.  An address in an alias domain
        gives the user of the target domain (``UserInfo.address`` is the canonical one)."""
        local, domain = split_address(address)
        row = self._find(domain, [local.lower()])
        return None if row is None else self._info(row)

    def find_mailbox(self, address: str) -> Path | None:
        """The Maildir that receives mail for ``address``, or None.

        Case-insensitive.  vpopmail's extension rule: if ``user-ext`` is not a user, the
        part before the first ``-`` is tried (``user``).  BOUNCE_MAIL users have none.
        """
        local, domain = split_address(address)
        local = local.lower()
        candidates = [local]
        base, dash, _ext = local.partition("-")
        if dash and base:
            candidates.append(base)
        row = self._find(domain, candidates)
        if row is None or row.flags & UserFlag.BOUNCE_MAIL:
            return None
        return self._home.root / str(row.maildir)

    def verify_password(self, address: str, password: str) -> bool:
        """Whether ``password`` is the user's; False for unknown, password-less or DISABLED."""
        local, domain = split_address(address)
        row = self._find(domain, [local.lower()])
        usable = row is not None and not row.flags & UserFlag.DISABLED
        stored = row.password_hash if row is not None and usable else None
        if not passwords.verify(stored, password):
            return False
        assert row is not None and stored is not None
        if passwords.needs_rehash(stored):
            self._rehash(row.id, password)
        return True

    # -- helpers ---------------------------------------------------------------------

    def _find(self, domain: str, candidates: list[str]) -> Row[Any] | None:
        """The user row for the first of ``candidates`` that exists in ``domain``."""
        query = self._lookup.where(
            self._asked.c.name == domain.lower(), users.c.local_part.in_(candidates)
        )
        with _database(), self._engine.connect() as conn:
            rows = {row.local_part: row for row in conn.execute(query)}
        return next((rows[c] for c in candidates if c in rows), None)

    def _check_room(self, conn: Any, domain_row: Row[Any]) -> None:
        if domain_row.max_users is None:
            return
        count = conn.execute(
            select(func.count()).select_from(users).where(users.c.domain_id == domain_row.id)
        ).scalar()
        if count >= domain_row.max_users:
            raise DirectoryError(f"domain {domain_row.name} has its maximum of users")

    def _rehash(self, user_id: int, password: str) -> None:
        # Best effort: the login succeeded either way; the next one will try again.
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    users.update()
                    .where(users.c.id == user_id)
                    .values(password_hash=passwords.hash_password(password))
                )
        except SQLAlchemyError:
            pass

    def _info(self, row: Row[Any]) -> UserInfo:
        return UserInfo(
            address=f"{row.local_part}@{row.domain_name}",
            domain=row.domain_name,
            local_part=row.local_part,
            quota=row.quota,
            flags=UserFlag(row.flags),
            maildir=self._home.root / str(row.maildir),
            has_password=row.password_hash is not None,
            created=row.created,
        )

    def _now(self) -> int:
        return int(self._clock.time())


def _make_maildir(maildir: Path) -> None:
    """``maildir`` with cur/ new/ tmp/, every directory from the domain's down 0700."""
    for directory in (maildir.parent.parent, maildir.parent, maildir):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(mode=0o700, exist_ok=True)
