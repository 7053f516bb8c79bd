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
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Row, func, select, text
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from qtoaster.core.clock import Clock, SystemClock
from qtoaster.core.envelope import split_address
from qtoaster.core.home import Home
from qtoaster.directory import passwords, schema
from qtoaster.directory.engine import (
    ChangeWatcher,
    DirectoryUnavailable,
    make_engine,
    notify_change,
)
from qtoaster.directory.model import (
    AliasInfo,
    DirectoryError,
    DomainInfo,
    Recipient,
    UserInfo,
    valid_address,
    valid_domain,
    valid_target,
    valid_unknown_user,
)
from qtoaster.directory.schema import UNKNOWN_BOUNCE, UserFlag, aliases, domains, users

# Re-exported: callers import the directory's names from here.
__all__ = [
    "AliasInfo",
    "Directory",
    "DirectoryError",
    "DirectoryUnavailable",
    "DomainInfo",
    "Recipient",
    "UserInfo",
    "create_directory",
    "valid_address",
    "valid_domain",
]


def create_directory(home: Home) -> None:
    """Create ``users.sqlite3`` in ``home`` with the current schema (idempotent, 0600)."""
    home.root.mkdir(parents=True, exist_ok=True)
    # The file holds password hashes: create it private before SQLite opens it (SQLite
    # gives its -wal and -shm files the same permissions).
    os.close(os.open(home.database, os.O_CREAT | os.O_WRONLY, 0o600))
    Directory.open(home).close()


@contextmanager
def _database() -> Iterator[None]:
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
def _opening(engine_name: str) -> Iterator[None]:
    try:
        yield
    except SQLAlchemyError as exc:
        detail = exc.args[0] if exc.args else exc
        raise DirectoryUnavailable(
            f"cannot open the directory database ({engine_name}): {detail}"
        ) from exc


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
        # The real domain behind a name (itself or the target of an alias domain).
        self._real_domain = (
            select(real.c.id, real.c.name, real.c.unknown_user, real.c.secrets)
            .select_from(asked)
            .join(real, real.c.id == func.coalesce(asked.c.alias_of, asked.c.id))
        )
        self._watcher = ChangeWatcher(engine)

    @classmethod
    def open(cls, home: Home, url: str | None = None, *, clock: Clock | None = None) -> Directory:
        """Open the directory: SQLite in ``home.database`` or ``url`` (SQLAlchemy URL form).

        Creates missing tables and runs pending migrations; DirectoryError if the database
        is missing (SQLite) or newer than this program.
        """
        engine = make_engine(home, url)
        try:
            with _opening(engine.dialect.name), engine.begin() as conn:
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
                    schema.upgrade(conn, version)
        except BaseException:
            engine.dispose()
            raise
        return cls(home, engine, clock or SystemClock())

    def close(self) -> None:
        self._watcher.close()
        self._engine.dispose()

    def change_token(self) -> int | None:
        """A number that changes whenever the directory changes (any process, any host),
        or None when that cannot be known right now (callers then expire by time)."""
        return self._watcher.token()

    # -- domains ---------------------------------------------------------------------

    def add_domain(
        self,
        name: str,
        *,
        default_quota: int | None = None,
        max_users: int | None = None,
        unknown_user: str = UNKNOWN_BOUNCE,
        secrets: bool = False,
    ) -> None:
        domain = valid_domain(name)
        values = dict(
            name=domain,
            created=self._now(),
            default_quota=_non_negative("quota", default_quota),
            max_users=_non_negative("max users", max_users),
            unknown_user=valid_unknown_user(unknown_user),
            secrets=secrets,
        )
        try:
            with self._write() as conn:
                conn.execute(domains.insert().values(**values))
        except IntegrityError as exc:
            raise DirectoryError(f"domain {domain} already exists") from exc

    def add_alias_domain(self, alias: str, target: str) -> None:
        """Make ``alias`` a second name for the mailboxes of ``target`` (vpopmail's
        vaddaliasdomain)."""
        name = valid_domain(alias)
        with self._write() as conn:
            row = self._domain_row(conn, target)
            if row.alias_of is not None:
                raise DirectoryError(f"{row.name} is itself an alias of another domain")
            try:
                with conn.begin_nested():
                    conn.execute(
                        domains.insert().values(
                            name=name, alias_of=row.id, created=self._now(), unknown_user="bounce"
                        )
                    )
            except IntegrityError as exc:
                raise DirectoryError(f"domain {name} already exists") from exc

    def set_domain(
        self,
        name: str,
        *,
        default_quota: Any = UNSET,
        max_users: Any = UNSET,
        unknown_user: Any = UNSET,
        secrets: Any = UNSET,
    ) -> None:
        """Change a domain's defaults; arguments left UNSET keep their value."""
        values: dict[str, Any] = {}
        if default_quota is not UNSET:
            values["default_quota"] = _non_negative("quota", default_quota)
        if max_users is not UNSET:
            values["max_users"] = _non_negative("max users", max_users)
        if unknown_user is not UNSET:
            values["unknown_user"] = valid_unknown_user(unknown_user)
        if secrets is not UNSET:
            values["secrets"] = bool(secrets)
        with self._write() as conn:
            row = self._domain_row(conn, name)
            if row.alias_of is not None:
                raise DirectoryError(f"{row.name} is an alias domain: change its target")
            if values:
                conn.execute(domains.update().where(domains.c.id == row.id).values(**values))

    def delete_domain(self, name: str) -> None:
        """Remove the domain, its alias domains, users and aliases (not its files).

        Removing an alias domain removes only that name."""
        with self._write() as conn:
            domain_id = self._domain_row(conn, name).id
            # Explicit deletes rather than ON DELETE CASCADE: the same on every engine.
            ids = select(domains.c.id).where(
                (domains.c.id == domain_id) | (domains.c.alias_of == domain_id)
            )
            conn.execute(aliases.delete().where(aliases.c.domain_id.in_(ids)))
            conn.execute(users.delete().where(users.c.domain_id.in_(ids)))
            conn.execute(domains.delete().where(domains.c.alias_of == domain_id))
            conn.execute(domains.delete().where(domains.c.id == domain_id))

    def domains(self) -> list[str]:
        with _database(), self._engine.connect() as conn:
            return list(conn.execute(select(domains.c.name).order_by(domains.c.name)).scalars())

    def domain(self, name: str) -> DomainInfo | None:
        with _database(), self._engine.connect() as conn:
            row = conn.execute(select(domains).where(domains.c.name == name.lower())).first()
            if row is None:
                return None
            real_id = row.alias_of if row.alias_of is not None else row.id
            count = func.count()
            n_users = conn.execute(
                select(count).select_from(users).where(users.c.domain_id == real_id)
            ).scalar()
            n_aliases = conn.execute(
                select(func.count(func.distinct(aliases.c.local_part))).where(
                    aliases.c.domain_id == real_id
                )
            ).scalar()
            names = conn.execute(
                select(domains.c.name).where(domains.c.alias_of == real_id).order_by(domains.c.name)
            ).scalars()
            target = None
            if row.alias_of is not None:
                target = conn.execute(
                    select(domains.c.name).where(domains.c.id == real_id)
                ).scalar()
            return DomainInfo(
                name=row.name,
                alias_of=target,
                default_quota=row.default_quota,
                max_users=row.max_users,
                unknown_user=row.unknown_user,
                secrets=bool(row.secrets),
                users=int(n_users or 0),
                aliases=int(n_aliases or 0),
                alias_domains=tuple(names),
                created=row.created,
            )

    def hosts_domain(self, name: str) -> bool:
        if not _storable(name):
            return False
        query = select(domains.c.id).where(domains.c.name == name.lower())
        with _database(), self._engine.connect() as conn:
            return conn.execute(query).first() is not None

    # -- users -----------------------------------------------------------------------

    def add_user(
        self,
        address: str,
        password: str | None,
        quota: int | None = None,
        *,
        password_hash: str | None = None,
        quota_messages: int | None = None,
        flags: UserFlag = NO_FLAGS,
    ) -> None:
        """Add a user and create its Maildir (0700); ``quota`` None = the domain's default.

        ``password_hash`` stores an existing hash (an import) instead of hashing
        ``password``; secrets for CRAM-MD5/APOP are kept if the domain asks for them.
        """
        if password is not None and password_hash is not None:
            raise DirectoryError("give a password or a password hash, not both")
        if password is not None:
            password_hash = passwords.hash_password(password)
        self.add_users(
            [NewUser(address, password_hash, quota, quota_messages, flags)],
            password=password,
        )

    def add_users(self, new: Iterable[NewUser], *, password: str | None = None) -> int:
        """Add users in one transaction (all or none) and create their Maildirs.

        ``password`` (one user only) lets the domain's secrets be derived from it.
        """
        count = 0
        made: list[Path] = []
        try:
            with self._write() as conn:
                rows: dict[str, Row[Any]] = {}
                room: dict[str, int | None] = {}
                for entry in new:
                    local, domain = valid_address(entry.address)
                    if domain not in rows:
                        rows[domain] = row = self._domain_row(conn, domain)
                        if row.alias_of is not None:
                            raise DirectoryError(
                                f"domain {domain} is an alias; add the user to its target"
                            )
                        room[domain] = self._room(conn, row)
                    row = rows[domain]
                    left = room[domain]
                    if left is not None:
                        if left <= 0:
                            raise DirectoryError(f"domain {domain} has its maximum of users")
                        room[domain] = left - 1
                    maildir = self._home.maildir(domain, local)
                    values = dict(
                        domain_id=row.id,
                        local_part=local,
                        password_hash=entry.password_hash,
                        quota=_non_negative("quota", entry.quota)
                        if entry.quota is not None
                        else row.default_quota,
                        quota_messages=_non_negative("quota", entry.quota_messages),
                        flags=int(entry.flags),
                        maildir=str(maildir.relative_to(self._home.root)),
                        created=self._now(),
                    )
                    if password is not None and row.secrets:
                        values.update(self._secret_columns(password))
                    try:
                        with conn.begin_nested():
                            conn.execute(users.insert().values(**values))
                    except IntegrityError as exc:
                        raise DirectoryError(f"user {local}@{domain} already exists") from exc
                    # Inside the transaction: if a Maildir cannot be made, nobody is added.
                    try:
                        if _make_maildir(maildir):
                            made.append(maildir)
                    except OSError as exc:
                        raise DirectoryError(f"cannot create {maildir}: {exc.strerror}") from exc
                    count += 1
        except BaseException:
            for maildir in made:  # only the Maildirs this call created, still empty
                _remove_empty_maildir(maildir)
            raise
        return count

    def delete_user(self, address: str) -> None:
        """Remove the user and the aliases of its address (not its files)."""
        local, domain = split_address(address)
        with self._write() as conn:
            row = self._domain_row(conn, domain)
            real_id = row.alias_of if row.alias_of is not None else row.id
            user_id = conn.execute(
                select(users.c.id).where(
                    users.c.domain_id == real_id, users.c.local_part == local.lower()
                )
            ).scalar()
            if user_id is None:
                raise DirectoryError(f"unknown user: {address}")
            conn.execute(users.delete().where(users.c.id == user_id))
            # As vdeluser: the address's own forwards go with it.
            conn.execute(
                aliases.delete().where(
                    aliases.c.domain_id == real_id, aliases.c.local_part == local.lower()
                )
            )

    def set_password(self, address: str, password: str | None) -> None:
        """Set (or with None remove) the password; secrets follow the user's choice."""
        password_hash = None if password is None else passwords.hash_password(password)
        with self._write() as conn:
            row = self._user_row(conn, address)
            values: dict[str, Any] = {
                "password_hash": password_hash,
                "cram_md5": None,
                "apop_secret": None,
            }
            if password is not None and self._wants_secrets(conn, row):
                values.update(self._secret_columns(password))
            conn.execute(users.update().where(users.c.id == row.id).values(**values))

    def set_user(
        self,
        address: str,
        *,
        quota: Any = UNSET,
        quota_messages: Any = UNSET,
        add_flags: UserFlag = NO_FLAGS,
        clear_flags: UserFlag = NO_FLAGS,
        secrets: Any = UNSET,
    ) -> UserInfo:
        """Change a user's quota, flags or secrets choice; the updated user.

        Turning secrets off forgets the stored ones at once; turning them on takes effect
        at the next password change (the server never knows the password otherwise)."""
        values: dict[str, Any] = {}
        if quota is not UNSET:
            values["quota"] = _non_negative("quota", quota)
        if quota_messages is not UNSET:
            values["quota_messages"] = _non_negative("quota", quota_messages)
        if secrets is not UNSET:
            values["secrets"] = secrets
        with self._write() as conn:
            row = self._user_row(conn, address)
            flags = (UserFlag(row.flags) | add_flags) & ~clear_flags
            values["flags"] = int(flags)
            conn.execute(users.update().where(users.c.id == row.id).values(**values))
            if secrets is not UNSET and not self._wants_secrets(
                conn, self._user_row(conn, address)
            ):
                conn.execute(
                    users.update()
                    .where(users.c.id == row.id)
                    .values(cram_md5=None, apop_secret=None)
                )
        info = self.user(address)
        assert info is not None
        return info

    def users(self, domain: str | None = None) -> list[UserInfo]:
        """Every user (of ``domain`` if given; DirectoryError if it is unknown), sorted."""
        query = select(users, domains.c.name.label("domain_name")).join(
            domains, users.c.domain_id == domains.c.id
        )
        with _database(), self._engine.connect() as conn:
            if domain is not None:
                real = self._domain_row(conn, domain)
                real_id = real.alias_of if real.alias_of is not None else real.id
                query = query.where(domains.c.id == real_id)
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
        row = self._find(domain, _candidates(local.lower()))
        if row is None or row.flags & UserFlag.BOUNCE_MAIL:
            return None
        return self._home.root / str(row.maildir)

    def resolve(self, address: str) -> Recipient | None:
        """Who receives mail for ``address``; None if its domain is not hosted here.

        The mailbox follows :meth:`find_mailbox`'s extension rule; forwards are the
        aliases of exactly this local part (vdelivermail checks valias first, spec 22).
        """
        local, domain = split_address(address)
        local = local.lower()
        if not _storable(local, domain):
            return None
        with _database(), self._engine.connect() as conn:
            real = conn.execute(
                self._real_domain.where(self._asked.c.name == domain.lower())
            ).first()
            if real is None:
                return None
            rows = {
                row.local_part: row
                for row in conn.execute(
                    select(users, domains.c.name.label("domain_name"))
                    .join(domains, users.c.domain_id == domains.c.id)
                    .where(users.c.domain_id == real.id, users.c.local_part.in_(_candidates(local)))
                )
            }
            targets = conn.execute(
                select(aliases.c.target, aliases.c.keep_copy)
                .where(aliases.c.domain_id == real.id, aliases.c.local_part == local)
                .order_by(aliases.c.id)
            ).all()
        row = next((rows[c] for c in _candidates(local) if c in rows), None)
        return Recipient(
            domain=real.name,
            local_part=local,
            user=None if row is None else self._info(row),
            forwards=tuple(t.target for t in targets),
            keep_copy=any(t.keep_copy for t in targets),
            unknown_user=real.unknown_user,
        )

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

    def auth_secrets(self, address: str) -> tuple[str | None, str | None]:
        """The user's CRAM-MD5 contexts and APOP secret (opened), each None if not kept.

        DISABLED users have none."""
        local, domain = split_address(address)
        row = self._find(domain, [local.lower()])
        if row is None or row.flags & UserFlag.DISABLED:
            return None, None
        apop = None
        if row.apop_secret is not None:
            from qtoaster.directory.secrets import SecretBox

            apop = SecretBox.load(self._home.secrets_key).open(row.apop_secret)
        return row.cram_md5, apop

    # -- aliases ---------------------------------------------------------------------

    def add_alias(self, address: str, targets: list[str], keep_copy: bool = False) -> int:
        """Forward ``address`` to ``targets`` (addresses or Maildir paths); the number of
        new targets (a target already there is kept, its keep_copy updated)."""
        local, domain = valid_address(address)
        checked = [valid_target(t) for t in targets]
        if not checked:
            raise DirectoryError("an alias needs at least one target")
        if f"{local}@{domain}" in checked:
            raise DirectoryError(f"{local}@{domain} cannot forward to itself")
        added = 0
        with self._write() as conn:
            row = self._domain_row(conn, domain)
            real_id = row.alias_of if row.alias_of is not None else row.id
            where = (aliases.c.domain_id == real_id) & (aliases.c.local_part == local)
            present = set(conn.execute(select(aliases.c.target).where(where)).scalars())
            for target in checked:
                if target not in present:
                    conn.execute(
                        aliases.insert().values(
                            domain_id=real_id, local_part=local, target=target, keep_copy=keep_copy
                        )
                    )
                    present.add(target)
                    added += 1
            conn.execute(aliases.update().where(where).values(keep_copy=keep_copy))
        return added

    def delete_alias(self, address: str, targets: list[str] | None = None) -> int:
        """Remove some targets of ``address`` (all if None); the number removed."""
        local, domain = split_address(address)
        with self._write() as conn:
            row = self._domain_row(conn, domain)
            real_id = row.alias_of if row.alias_of is not None else row.id
            where = (aliases.c.domain_id == real_id) & (aliases.c.local_part == local.lower())
            if targets:
                where = where & aliases.c.target.in_([valid_target(t) for t in targets])
            removed = conn.execute(aliases.delete().where(where)).rowcount
        if not removed:
            raise DirectoryError(f"no such alias: {address}")
        return int(removed)

    def aliases(self, domain: str | None = None) -> list[AliasInfo]:
        query = select(aliases, domains.c.name.label("domain_name")).join(
            domains, aliases.c.domain_id == domains.c.id
        )
        with _database(), self._engine.connect() as conn:
            if domain is not None:
                real = self._domain_row(conn, domain)
                real_id = real.alias_of if real.alias_of is not None else real.id
                query = query.where(domains.c.id == real_id)
            rows = conn.execute(
                query.order_by(domains.c.name, aliases.c.local_part, aliases.c.id)
            ).all()
        return [
            AliasInfo(f"{row.local_part}@{row.domain_name}", row.target, bool(row.keep_copy))
            for row in rows
        ]

    # -- helpers ---------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with _database(), self._engine.begin() as conn:
            yield conn
            notify_change(conn)  # caches of other processes forget (PostgreSQL)

    def _domain_row(self, conn: Connection, name: str, *, lock: bool = True) -> Row[Any]:
        """The domain's row; in a write, locked until commit (FOR UPDATE: concurrent
        user adds cannot pass max_users; SQLite serialises writers anyway)."""
        query = select(domains).where(domains.c.name == name.lower())
        if lock and conn.in_transaction() and self._engine.dialect.name == "postgresql":
            query = query.with_for_update()
        row = conn.execute(query).first()
        if row is None:
            raise DirectoryError(f"unknown domain: {name.lower()}")
        return row

    def _user_row(self, conn: Connection, address: str) -> Row[Any]:
        local, domain = split_address(address)
        row = conn.execute(
            self._lookup.where(
                self._asked.c.name == domain.lower(), users.c.local_part == local.lower()
            )
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

    def _secret_columns(self, password: str) -> dict[str, str]:
        from qtoaster.directory.secrets import SecretBox, cram_md5_contexts

        box = SecretBox.load(self._home.secrets_key, create=True)
        return {"cram_md5": cram_md5_contexts(password), "apop_secret": box.seal(password)}

    def _find(self, domain: str, candidates: list[str]) -> Row[Any] | None:
        """The user row for the first of ``candidates`` that exists in ``domain``."""
        if not _storable(domain, *candidates):
            return None
        query = self._lookup.where(
            self._asked.c.name == domain.lower(), users.c.local_part.in_(candidates)
        )
        with _database(), self._engine.connect() as conn:
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
            quota_messages=row.quota_messages,
            secrets=None if row.secrets is None else bool(row.secrets),
            has_secrets=row.cram_md5 is not None,
        )

    def _now(self) -> int:
        return int(self._clock.time())


def _storable(*names: str) -> bool:
    """Whether names can be in the database at all: stored names are validated ASCII, and
    PostgreSQL refuses a NUL or undecodable text with an error (which would look like an
    outage, a temporary failure, for what is simply "no such name")."""
    return all(name.isascii() and "\x00" not in name for name in names)


def _candidates(local: str) -> list[str]:
    """vpopmail's extension rule: ``user-ext``, then ``user`` (spec 22)."""
    base, dash, _ext = local.partition("-")
    return [local, base] if dash and base else [local]


def _non_negative(what: str, value: int | None) -> int | None:
    if value is not None and value < 0:
        raise DirectoryError(f"invalid {what}: {value}")
    return value


def _make_maildir(maildir: Path) -> bool:
    """``maildir`` with cur/ new/ tmp/, every directory from the domain's down 0700;
    whether the Maildir itself was new."""
    for directory in (maildir.parent.parent, maildir.parent):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        maildir.mkdir(mode=0o700)
        created = True
    except FileExistsError:
        created = False
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(mode=0o700, exist_ok=True)
    return created


def _remove_empty_maildir(maildir: Path) -> None:
    """Undo :func:`_make_maildir` of a user that was not added (only empty directories)."""
    for path in (maildir / "cur", maildir / "new", maildir / "tmp", maildir, maildir.parent):
        try:
            path.rmdir()
        except OSError:
            return
