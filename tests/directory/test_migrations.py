"""Schema migrations on both engines: a version 1 directory opens as the current version,
keeping its rows; a newer one is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, text, update

from qtoaster.core.home import Home
from qtoaster.directory import schema
from qtoaster.directory.engine import make_engine
from qtoaster.directory.store import Directory, DirectoryError, Vacation, create_directory

V2_COLUMNS = {"domains": ["secrets"], "users": ["secrets", "cram_md5", "apop_secret"]}
V3_COLUMNS = {"users": ["has_password", "has_secrets"]}
V4_COLUMNS = {"users": ["junk_spam"]}


@pytest.fixture
def home(tmp_path: Path, directory_url: str | None) -> Home:
    home = Home(tmp_path / "home")
    home.root.mkdir()
    if directory_url is None:
        create_directory(home)
    return home


def _make_v1(engine: Engine) -> None:
    """The version 1 schema, as the foundation shipped it, with one domain and user."""
    with engine.begin() as conn:
        schema.install(conn)
        schema.vacations.drop(conn)
        for table, columns in [*V4_COLUMNS.items(), *V3_COLUMNS.items(), *V2_COLUMNS.items()]:
            for column in columns:
                conn.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
        conn.execute(update(schema.schema_version).values(version=1))
        conn.execute(
            text(
                "INSERT INTO domains (id, name, unknown_user, created)"
                " VALUES (1, 'example.com', 'bounce', 0)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO users (domain_id, local_part, flags, maildir, created)"
                " VALUES (1, 'alice', 0, 'domains/example.com/alice/Maildir', 0)"
            )
        )


def test_version_1_is_upgraded_and_keeps_its_rows(home: Home, directory_url: str | None) -> None:
    engine = make_engine(home, directory_url)
    with engine.begin() as conn:
        # create_directory (SQLite) made the current schema: start again from nothing.
        schema.metadata.drop_all(conn)
    _make_v1(engine)
    engine.dispose()
    directory = Directory.open(home, directory_url)
    try:
        info = directory.domain("example.com")
        assert info is not None and info.secrets is False and info.users == 1
        user = directory.user("alice@example.com")
        assert user is not None and user.secrets is None and not user.has_secrets
        directory.set_user("alice@example.com", secrets=True)
        directory.set_password("alice@example.com", "pw")
        assert directory.auth_secrets("alice@example.com")[0] is not None
        # Version 4: the spam folder choice (off) and the vacations table.
        assert not user.junk_spam and directory.vacation("alice@example.com") is None
        directory.set_vacation("alice@example.com", Vacation(True, "Away", "Back soon."))
        assert directory.vacation("alice@example.com") is not None
    finally:
        directory.close()
    engine = make_engine(home, directory_url)
    with engine.connect() as conn:
        assert schema.stored_version(conn) == schema.SCHEMA_VERSION
    engine.dispose()


def test_a_newer_schema_is_refused(home: Home, directory_url: str | None) -> None:
    Directory.open(home, directory_url).close()
    engine = make_engine(home, directory_url)
    with engine.begin() as conn:
        conn.execute(update(schema.schema_version).values(version=schema.SCHEMA_VERSION + 1))
    engine.dispose()
    with pytest.raises(DirectoryError, match="newer"):
        Directory.open(home, directory_url)
