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

from qtoaster.core.home import Home
from qtoaster.directory.base import NO_FLAGS, UNSET, NewUser
from qtoaster.directory.credentials import create_credentials_file, credentials_file
from qtoaster.directory.domains import DomainOps
from qtoaster.directory.engine import DirectoryUnavailable
from qtoaster.directory.model import (
    AliasInfo,
    DirectoryError,
    DomainInfo,
    Recipient,
    UserInfo,
    Vacation,
    valid_address,
    valid_domain,
)
from qtoaster.directory.users import UserOps
from qtoaster.directory.vacations import VacationOps

# Re-exported: callers import the directory's names from here.
__all__ = [
    "NO_FLAGS",
    "UNSET",
    "AliasInfo",
    "Directory",
    "DirectoryError",
    "DirectoryUnavailable",
    "DomainInfo",
    "NewUser",
    "Recipient",
    "UserInfo",
    "Vacation",
    "create_directory",
    "credentials_file",
    "valid_address",
    "valid_domain",
]


class Directory(DomainOps, UserOps, VacationOps):
    """Domains, users, aliases and vacation settings: one object per process, shared by
    its threads."""


def create_directory(home: Home) -> None:
    """Create ``users.sqlite3`` and ``credentials.sqlite3`` in ``home`` with the current
    schemas (idempotent, both 0600)."""
    home.root.mkdir(parents=True, exist_ok=True)
    # Create the files private before SQLite opens them (SQLite gives its -wal and -shm
    # files the same permissions).  The directory holds no credential since version 3,
    # but who lives where (users, mailboxes) is nobody else's business either.
    os.close(os.open(home.database, os.O_CREAT | os.O_WRONLY, 0o600))
    create_credentials_file(home)
    directory = Directory.open(home)
    try:
        directory._credentials()  # installs the credentials table
    finally:
        directory.close()
