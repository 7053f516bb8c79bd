"""Session-wide fixtures: a real PostgreSQL server, started only if a test asks for it.

CI must test PostgreSQL: when the server binaries are missing the fixtures FAIL (they do
not skip) with a message saying what to install.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from .pgserver import PgServer, PostgresMissing, start_server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PgServer]:
    """One PostgreSQL for the whole session (127.0.0.1, a free port, trust auth)."""
    try:
        server = start_server()
    except PostgresMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PgServer) -> str:
    """``postgresql://qtoaster@127.0.0.1:PORT/qtoaster``: one database shared by the session."""
    return postgres_server.url(postgres_server.create_database("qtoaster"))


@pytest.fixture
def fresh_postgres_url(postgres_server: PgServer) -> Iterator[str]:
    """A new empty database for this test only (dropped afterwards, even if still in use)."""
    name = postgres_server.create_database()
    yield postgres_server.url(name)
    postgres_server.drop_database(name)


@pytest.fixture(scope="session", autouse=True)
def _role_accounts() -> None:
    """Run as root (CI is), qtoaster's roles drop to their system users (docs/security.md),
    which `qtoaster init` creates on first use; made here once, so that whether a test finds
    them does not depend on which test ran first."""
    if os.geteuid() != 0:
        return
    from qtoaster.config.settings import RoleUsers
    from qtoaster.supervisor.accounts import ensure_accounts

    ensure_accounts(RoleUsers())
