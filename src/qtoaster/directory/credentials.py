"""The credential store: password hashes and CRAM-MD5/APOP secrets, apart from the directory.

Decision 0007 ("Secrets"): the directory must stay readable by smtpd (chkuser, routing), so
it holds no credential; only the auth role may read this store.  SQLite: its own file,
:func:`credentials_file` (``credentials/credentials.sqlite3``, in a directory of its own so
that under root its owner, the auth user, can write its journal there; mode 0600);
PostgreSQL: ``[database] credentials_url``, or without it the table ``credentials`` in the
directory's own database (which separates nothing until the operator moves it or splits
the GRANTs, docs/directory.md).

Rows are keyed by the directory's ``users.id`` and also carry the user's canonical
address; a row whose address does not match the user asking is ignored, so a row left
behind by a crash (or a restored backup of the other database) never lends one user's
password to another who later got the same id.

Invariants:
- nothing opens this store unless a credential is set, verified or read (the directory
  opens it lazily), so a role without access to it can use every other directory method;
- the SQLite file is created 0600 before SQLite opens it (its -wal/-shm files follow);
- errors are DirectoryUnavailable (temporary) and never quote statement parameters.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Column, Connection, Engine, Integer, MetaData, String, Table, select, text

from qtoaster.core.home import Home
from qtoaster.directory.engine import DirectoryUnavailable, make_engine

FILE_NAME = "credentials.sqlite3"

metadata = MetaData()

credentials = Table(
    "credentials",
    metadata,
    Column("user_id", Integer, primary_key=True),  # users.id of the directory
    Column("address", String(320), nullable=False),  # local@realdomain, lower-case
    Column("password_hash", String(255), nullable=True),  # argon2 PHC (or imported crypt)
    Column("cram_md5", String(64), nullable=True),  # Dovecot's {CRAM-MD5} contexts (hex)
    Column("apop_secret", String(255), nullable=True),  # sealed with the home's key file
)


@dataclass(frozen=True, slots=True)
class Credential:
    """What the store keeps for one user; None = not kept."""

    password_hash: str | None = None
    cram_md5: str | None = None
    apop_secret: str | None = None


def credentials_file(home: Home) -> Path:
    """Where a SQLite directory keeps its credentials (the privilege setup chowns it and its
    directory to the auth user)."""
    return home.root / "credentials" / FILE_NAME


def create_credentials_file(home: Home) -> Path:
    """Make the SQLite credential file if it is missing, private from the start."""
    path = credentials_file(home)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    return path


def separates(url: str | None, credentials_url: str | None) -> bool:
    """Whether credentials live apart from the directory: SQLite always (its own file);
    PostgreSQL only with a ``credentials_url`` other than the directory's."""
    if url is None or url.startswith("sqlite"):
        return True
    return credentials_url is not None and credentials_url != url


def separation_warning(url: str | None, credentials_url: str | None) -> str | None:
    """The config check's warning when PostgreSQL keeps credentials in the directory's
    database (anyone who reads the directory may read them), else None."""
    if separates(url, credentials_url):
        return None
    return (
        "[database] credentials_url is not set: password hashes and CRAM-MD5/APOP secrets"
        " are in the directory's own database (table credentials); set credentials_url or"
        " restrict that table with GRANTs (docs/directory.md)"
    )


class CredentialStore:
    """The credentials table on its own engine, or on the directory's (``shared``)."""

    def __init__(self, engine: Engine, *, shared: bool) -> None:
        self.engine = engine
        self.shared = shared  # the directory's engine: writes join its transaction

    @classmethod
    def open(
        cls, home: Home, url: str | None, credentials_url: str | None, directory: Engine
    ) -> CredentialStore:
        """The store for a directory at ``url`` (None: SQLite in the home).

        The SQLite file must exist (``qtoaster init`` and the version 3 migration make
        it); the table is created when missing.
        """
        shared = False
        if credentials_url is not None:
            engine = make_engine(home, credentials_url)
        elif url is None or directory.dialect.name == "sqlite":
            path = credentials_file(home)
            if not path.is_file():
                raise DirectoryUnavailable(f"no credential store at {path} (run qtoaster init)")
            engine = make_engine(home, f"sqlite:///{path}")
        else:
            engine, shared = directory, True
        try:
            with credential_errors(), engine.begin() as conn:
                if engine.dialect.name == "postgresql":
                    # Two processes opening a new store at once must not both create it.
                    conn.execute(text("SELECT pg_advisory_xact_lock(7170433)"))
                metadata.create_all(conn, checkfirst=True)
        except BaseException:
            if not shared:
                engine.dispose()
            raise
        return cls(engine, shared=shared)

    def close(self) -> None:
        if not self.shared:
            self.engine.dispose()

    @contextmanager
    def writing(self, directory_conn: Connection) -> Iterator[Connection]:
        """A connection to write credentials on: the directory's own when shared (one
        transaction), else a transaction of this store that commits at the block's end,
        before the directory's (so a crash leaves a credential without its user, which
        the next add of that user overwrites, never a user pointing at nothing)."""
        if self.shared:
            yield directory_conn
            return
        with credential_errors(), self.engine.begin() as conn:
            yield conn

    def get(self, user_id: int, address: str) -> Credential:
        with credential_errors(), self.engine.connect() as conn:
            row = conn.execute(select(credentials).where(credentials.c.user_id == user_id)).first()
        if row is None or row.address != address:
            return Credential()
        return Credential(row.password_hash, row.cram_md5, row.apop_secret)


def put(conn: Connection, entries: Sequence[tuple[int, str, Credential]]) -> None:
    """Replace the credentials of these users (an empty Credential keeps a row of NULLs,
    which overwrites anything a former user of the same id left)."""
    rows = [
        {
            "user_id": user_id,
            "address": address,
            "password_hash": cred.password_hash,
            "cram_md5": cred.cram_md5,
            "apop_secret": cred.apop_secret,
        }
        for user_id, address, cred in entries
    ]
    if not rows:
        return
    delete(conn, [user_id for user_id, _address, _cred in entries])
    conn.execute(credentials.insert(), rows)


def update(conn: Connection, user_id: int, **values: str | None) -> None:
    conn.execute(credentials.update().where(credentials.c.user_id == user_id).values(**values))


def delete(conn: Connection, user_ids: list[int]) -> None:
    for start in range(0, len(user_ids), 500):  # bounded IN lists
        conn.execute(
            credentials.delete().where(credentials.c.user_id.in_(user_ids[start : start + 500]))
        )


@contextmanager
def credential_errors() -> Iterator[None]:
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except SQLAlchemyError as exc:
        # The class name only: a driver's message may quote a hash or a sealed secret.
        raise DirectoryUnavailable(
            f"credential store error: {type(exc).__name__}: {exc.args[0] if exc.args else ''}"
        ) from exc
