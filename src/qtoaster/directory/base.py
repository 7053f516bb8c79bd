"""The directory's common ground: the engine, transactions, row lookups (DESIGN.md 6).

:class:`DirectoryBase` opens the database (creating or migrating the schema) and holds
what every part of the directory shares; ``domains.py`` and ``users.py`` add the
operations, ``store.py`` puts them together as :class:`Directory`.

Invariants:
- every write runs in one transaction that also notifies other processes (engine.py);
- database trouble raises DirectoryUnavailable (temporary), never a raw driver error;
- a name that cannot be stored (NUL, non-ASCII) is simply not found;
- credentials (password hashes, CRAM-MD5/APOP secrets) live in the credential store
  (credentials.py), opened only by the first method that needs one, so a role that may
  not read it (smtpd) uses every other method; the users table keeps only has_password
  and has_secrets.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from sqlalchemy import Connection, Engine, Row, func, select, text
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from qtoaster.core.clock import Clock, SystemClock
from qtoaster.core.domain import domain_key, local_key, valid_utf8
from qtoaster.core.envelope import split_address
from qtoaster.core.home import Home
from qtoaster.directory import credentials, passwords, schema
from qtoaster.directory.credentials import Credential, CredentialStore
from qtoaster.directory.engine import (
    WRITE_OPTION,
    ChangeWatcher,
    DirectoryUnavailable,
    make_engine,
    notify_change,
)
from qtoaster.directory.model import (
    DirectoryError,
    UserInfo,
)
from qtoaster.directory.schema import UserFlag, domains, users


@contextmanager
def database_errors() -> Iterator[None]:
    try:
        yield
    except IntegrityError:
        raise
    except SQLAlchemyError as exc:
        raise DirectoryUnavailable(f"directory database error: {exc}") from exc


class _Unset:
    """The default of setters' keyword arguments: "leave this value as it is"."""


UNSET: Any = _Unset()
NO_FLAGS = UserFlag(0)


@dataclass(frozen=True, slots=True)
class NewUser:
    """One user of a bulk :meth:`Directory.add_users` (password already hashed)."""

    address: str
    password_hash: str | None = None
    quota: int | None = None
    quota_messages: int | None = None
    flags: UserFlag = NO_FLAGS


@contextmanager
def opening_errors(engine_name: str) -> Iterator[None]:
    try:
        yield
    except SQLAlchemyError as exc:
        detail = exc.args[0] if exc.args else exc
        raise DirectoryUnavailable(
            f"cannot open the directory database ({engine_name}): {detail}"
        ) from exc


class DirectoryBase:
    def __init__(
        self,
        home: Home,
        engine: Engine,
        clock: Clock,
        *,
        url: str | None = None,
        credentials_url: str | None = None,
    ) -> None:
        self._home = home
        self._engine = engine
        self._clock = clock
        self._url = url
        self._credentials_url = credentials_url
        self._store: CredentialStore | None = None
        self._store_lock = threading.Lock()
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
        # The real domain behind a name (itself or the target of an alias domain).
        self._real_domain = (
            select(real.c.id, real.c.name, real.c.unknown_user, real.c.secrets)
            .select_from(asked)
            .join(real, real.c.id == func.coalesce(asked.c.alias_of, asked.c.id))
        )
        self._watcher = ChangeWatcher(engine)

    @classmethod
    def open(
        cls,
        home: Home,
        url: str | None = None,
        *,
        clock: Clock | None = None,
        credentials_url: str | None = None,
    ) -> Self:
        """Open the directory: SQLite in ``home.database`` or ``url`` (SQLAlchemy URL form).

        Creates missing tables and runs pending migrations; DirectoryError if the database
        is missing (SQLite) or newer than this program.  The credential store (SQLite:
        :func:`credentials.credentials_file`; else ``credentials_url``, by default the
        directory's own database) is not opened here, except to move credentials into it
        when upgrading a directory older than version 3.
        """
        engine = make_engine(home, url)
        upgraded = False
        try:
            with opening_errors(engine.dialect.name), engine.begin() as conn:
                if engine.dialect.name == "postgresql":
                    # Two hosts opening a new database at once must not both create it.
                    conn.execute(text("SELECT pg_advisory_xact_lock(7170432)"))
                version = schema.stored_version(conn)
                if version is None:
                    schema.install(conn)
                elif version > schema.SCHEMA_VERSION:
                    raise DirectoryError(
                        f"directory schema version {version} is newer than this qtoaster"
                        f" ({schema.SCHEMA_VERSION})"
                    )
                elif version < schema.SCHEMA_VERSION:
                    if version < schema.CREDENTIALS_MOVED:
                        _move_credentials(home, url, credentials_url, engine, conn, version)
                    schema.upgrade(conn, version)
                    upgraded = version < schema.CREDENTIALS_MOVED
            if upgraded and engine.dialect.name == "sqlite":
                _purge_freed_pages(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(home, engine, clock or SystemClock(), url=url, credentials_url=credentials_url)

    def close(self) -> None:
        self._watcher.close()
        with self._store_lock:
            if self._store is not None:
                self._store.close()
            self._store = None
        self._engine.dispose()

    @property
    def credentials_file(self) -> Path | None:
        """The SQLite credential store's file (None when the credentials are elsewhere):
        the privilege setup gives it to the auth user."""
        if self._credentials_url is None and self._engine.dialect.name == "sqlite":
            return credentials.credentials_file(self._home)
        return None

    def _credentials(self) -> CredentialStore:
        """The credential store, opened at the first call (DirectoryUnavailable if it
        cannot be: a role without access to it fails here, and only here)."""
        store = self._store
        if store is not None:
            return store
        with self._store_lock:
            if self._store is None:
                with opening_errors("credential store"):
                    self._store = CredentialStore.open(
                        self._home, self._url, self._credentials_url, self._engine
                    )
            return self._store

    def change_token(self) -> int | None:
        """A number that changes whenever the directory changes (any process, any host),
        or None when that cannot be known right now (callers then expire by time)."""
        return self._watcher.token()

    # -- helpers ---------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with database_errors(), self._engine.connect() as conn:
            conn.execution_options(**{WRITE_OPTION: True})
            with conn.begin():
                yield conn
                notify_change(conn)  # caches of other processes forget (PostgreSQL)

    def _domain_row(self, conn: Connection, name: str, *, lock: bool = True) -> Row[Any]:
        """The domain's row; in a write, locked until commit (FOR UPDATE: concurrent
        user adds cannot pass max_users; SQLite serialises writers anyway)."""
        query = select(domains).where(domains.c.name == domain_key(name))
        if lock and conn.in_transaction() and self._engine.dialect.name == "postgresql":
            query = query.with_for_update()
        row = conn.execute(query).first()
        if row is None:
            raise DirectoryError(f"unknown domain: {domain_key(name)}")
        return row

    def _real_domain_id(self, conn: Connection, name: str) -> int:
        """The id whose users and aliases serve ``name`` (an alias domain's target)."""
        row = self._domain_row(conn, name)
        return int(row.alias_of if row.alias_of is not None else row.id)

    def _user_row(self, conn: Connection, address: str) -> Row[Any]:
        local, domain = split_address(address)
        row = conn.execute(
            self._lookup.where(self._asked.c.name == domain, users.c.local_part == local_key(local))
        ).first()
        if row is None:
            raise DirectoryError(f"unknown user: {address}")
        return row

    def _wants_secrets(self, conn: Connection, user_row: Row[Any]) -> bool:
        if user_row.secrets is not None:
            return bool(user_row.secrets)
        domain_secrets = conn.execute(
            select(domains.c.secrets).where(domains.c.id == user_row.domain_id)
        ).scalar()
        return bool(domain_secrets)

    def _credential(
        self, password_hash: str | None, password: str | None, secrets: bool
    ) -> Credential:
        """What to store: the hash, and with ``secrets`` the CRAM-MD5/APOP forms."""
        if password is None or not secrets:
            return Credential(password_hash)
        from qtoaster.directory.secrets import SecretBox, cram_md5_contexts

        box = SecretBox.load(self._home.secrets_key, create=True)
        return Credential(password_hash, cram_md5_contexts(password), box.seal(password))

    def _stored(self, row: Row[Any]) -> Credential:
        """The credentials of the user ``row`` (a lookup row with domain_name)."""
        return self._credentials().get(int(row.id), _address(row))

    def _find(self, domain: str, candidates: list[str]) -> Row[Any] | None:
        """The user row for the first of ``candidates`` that exists in ``domain``."""
        if not storable(domain, *candidates):
            return None
        query = self._lookup.where(
            self._asked.c.name == domain_key(domain), users.c.local_part.in_(candidates)
        )
        with database_errors(), self._engine.connect() as conn:
            rows = {row.local_part: row for row in conn.execute(query)}
        return next((rows[c] for c in candidates if c in rows), None)

    def _room(self, conn: Connection, domain_row: Row[Any]) -> int | None:
        """How many more users the domain takes (None = no limit)."""
        if domain_row.max_users is None:
            return None
        count = conn.execute(
            select(func.count()).select_from(users).where(users.c.domain_id == domain_row.id)
        ).scalar()
        return int(domain_row.max_users) - int(count or 0)

    def _rehash(self, user_id: int, password: str) -> None:
        # Best effort: the login succeeded either way; the next one will try again.
        try:
            with self._credentials().engine.begin() as conn:
                credentials.update(conn, user_id, password_hash=passwords.hash_password(password))
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
            has_password=bool(row.has_password),
            created=row.created,
            quota_messages=row.quota_messages,
            secrets=None if row.secrets is None else bool(row.secrets),
            has_secrets=bool(row.has_secrets),
            junk_spam=bool(row.junk_spam),
        )

    def _now(self) -> int:
        return int(self._clock.time())


def _address(row: Row[Any]) -> str:
    return f"{row.local_part}@{row.domain_name}"


def _move_credentials(
    home: Home,
    url: str | None,
    credentials_url: str | None,
    engine: Engine,
    conn: Connection,
    version: int,
) -> None:
    """Copy every credential of a version 1 or 2 users table into the credential store
    and commit them there, before the caller's migration blanks them (schema._v2_to_v3):
    crash-safe in that order, and a re-run copies the same rows again."""
    secret_columns = ", u.cram_md5, u.apop_secret" if version >= 2 else ""
    rows = conn.execute(
        text(
            "SELECT u.id, u.local_part, d.name AS domain_name, u.password_hash"
            f"{secret_columns} FROM users u JOIN domains d ON d.id = u.domain_id"
        )
    ).all()
    entries = [
        (
            int(row.id),
            _address(row),
            Credential(
                row.password_hash,
                getattr(row, "cram_md5", None),
                getattr(row, "apop_secret", None),
            ),
        )
        for row in rows
    ]
    if url is None and credentials_url is None:
        credentials.create_credentials_file(home)
    store = CredentialStore.open(home, url, credentials_url, engine)
    try:
        with store.writing(conn) as target:
            credentials.put(target, entries)
    finally:
        store.close()


def _purge_freed_pages(engine: Engine) -> None:
    """After blanking credentials in SQLite, rewrite the file (VACUUM) and empty the WAL,
    so the old hashes do not linger in free pages.  Best effort: a reader holding the
    file open makes it wait for a later occasion (the rows are blank already)."""
    import sqlite3

    database = engine.url.database
    if not database:
        return
    try:
        # Not through the engine: VACUUM cannot run in the transaction it would begin.
        conn = sqlite3.connect(database, isolation_level=None, timeout=1.0)
        try:
            conn.execute("VACUUM")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
    except sqlite3.Error:
        pass


def storable(*names: str) -> bool:
    """Whether names can be in the database at all: stored names are validated ASCII or
    UTF-8 (a hosted local part may be UTF-8, decision 0021), and PostgreSQL refuses a NUL
    or undecodable text with an error (which would look like an outage, a temporary
    failure, for what is simply "no such name")."""
    return all(valid_utf8(name) and "\x00" not in name for name in names)


def candidates(local: str) -> list[str]:
    """vpopmail's extension rule: ``user-ext``, then ``user`` (spec 22)."""
    base, dash, _ext = local.partition("-")
    return [local, base] if dash and base else [local]


def non_negative(what: str, value: int | None) -> int | None:
    if value is not None and value < 0:
        raise DirectoryError(f"invalid {what}: {value}")
    return value
