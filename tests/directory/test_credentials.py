"""The credential store (decision 0007, "Secrets"): hashes and CRAM-MD5/APOP secrets live
apart from the directory, which smtpd reads; the directory opens the store only for a
credential; a version 2 directory moves its credentials there, crash-safe."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text, update

from qtoaster.core.home import Home
from qtoaster.directory import credentials, passwords, schema
from qtoaster.directory.credentials import CredentialStore, credentials_file
from qtoaster.directory.engine import make_engine
from qtoaster.directory.secrets import SecretBox, cram_md5_contexts
from qtoaster.directory.store import Directory, DirectoryUnavailable, create_directory

CREDENTIAL_COLUMNS = ("password_hash", "cram_md5", "apop_secret")


@pytest.fixture
def home(tmp_path: Path, directory_url: str | None) -> Home:
    home = Home(tmp_path / "home")
    if directory_url is None:
        create_directory(home)
    else:
        home.root.mkdir()
        Directory.open(home, directory_url).close()
    return home


@pytest.fixture
def db(home: Home, directory_url: str | None) -> Iterator[Engine]:
    engine = make_engine(home, directory_url)
    yield engine
    engine.dispose()


def _users_credentials(db: Engine) -> list[tuple[object, ...]]:
    columns = [schema.users.c[name] for name in CREDENTIAL_COLUMNS]
    with db.connect() as conn:
        return [tuple(row) for row in conn.execute(select(*columns))]


def _sqlite_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    wal = path.with_name(path.name + "-wal")
    return data + (wal.read_bytes() if wal.exists() else b"")


def test_credentials_live_only_in_the_store(
    home: Home, db: Engine, directory_url: str | None
) -> None:
    directory = Directory.open(home, directory_url)
    try:
        directory.add_domain("example.com", secrets=True)
        directory.add_user("alice@example.com", "s3cret")
        directory.add_user("bob@example.com", None)
        directory.set_password("bob@example.com", "other")
        assert directory.verify_password("alice@example.com", "s3cret")
        assert directory.verify_password("bob@example.com", "other")
        cram, apop = directory.auth_secrets("alice@example.com")
        assert cram == cram_md5_contexts("s3cret") and apop == "s3cret"
        alice = directory.user("alice@example.com")
        assert alice is not None and alice.has_password and alice.has_secrets
        assert directory.secrets_everywhere()
    finally:
        directory.close()
    assert _users_credentials(db) == [(None, None, None), (None, None, None)]
    if directory_url is None:
        assert b"$argon2" not in _sqlite_bytes(home.database)
        assert b"$argon2" in _sqlite_bytes(credentials_file(home))
        assert stat.S_IMODE(os.stat(credentials_file(home)).st_mode) == 0o600


def test_removing_password_and_secrets_forgets_them(home: Home, directory_url: str | None) -> None:
    directory = Directory.open(home, directory_url)
    try:
        directory.add_domain("example.com", secrets=True)
        directory.add_user("alice@example.com", "s3cret")
        directory.set_user("alice@example.com", secrets=False)
        assert directory.auth_secrets("alice@example.com") == (None, None)
        assert directory.verify_password("alice@example.com", "s3cret")
        directory.set_password("alice@example.com", None)
        assert not directory.verify_password("alice@example.com", "s3cret")
        directory.delete_user("alice@example.com")
        directory.add_user("alice@example.com", None)  # may get the same id again
        assert not directory.verify_password("alice@example.com", "s3cret")
        directory.set_password("alice@example.com", "new")
        directory.delete_domain("example.com")
        store = directory._credentials()
        with store.engine.connect() as conn:
            left = conn.execute(select(credentials.credentials.c.user_id)).all()
        assert left == []
    finally:
        directory.close()


def test_lookups_never_open_the_credential_store(
    home: Home, directory_url: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # smtpd's lookups (chkuser, routing, EHLO's mechanism choice) must work for a role that
    # cannot read the credential store: here absent (SQLite) and refused to open (both).
    setup = Directory.open(home, directory_url)
    setup.add_domain("example.com", secrets=True)
    setup.add_user("alice@example.com", "s3cret")
    setup.add_alias("info@example.com", ["alice@example.com"])
    setup.close()
    if directory_url is None:
        credentials_file(home).rename(credentials_file(home).with_suffix(".away"))

    def refuse(*args: object) -> CredentialStore:
        raise AssertionError("the credential store was opened")

    monkeypatch.setattr(CredentialStore, "open", refuse)
    directory = Directory.open(home, directory_url)
    try:
        recipient = directory.resolve("alice@example.com")
        assert recipient is not None and recipient.user is not None
        assert directory.resolve("info@example.com") is not None
        assert directory.find_mailbox("alice-ext@example.com") is not None
        assert directory.hosts_domain("example.com")
        info = directory.user("alice@example.com")
        assert info is not None and info.has_password and info.has_secrets
        assert [u.address for u in directory.users()] == ["alice@example.com"]
        assert directory.secrets_everywhere()
        # Unknown users are refused without the store too (and still pay a hash).
        assert not directory.verify_password("nobody@example.com", "s3cret")
        assert directory.auth_secrets("nobody@example.com") == (None, None)
    finally:
        directory.close()


def test_an_absent_sqlite_store_is_a_temporary_error_for_credentials(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    create_directory(home)
    credentials_file(home).unlink()
    directory = Directory.open(home)
    try:
        assert directory.user("nobody@example.com") is None
        directory.add_domain("example.com")
        with pytest.raises(DirectoryUnavailable, match="no credential store"):
            directory.add_user("alice@example.com", "s3cret")
        assert directory.user("alice@example.com") is None  # nothing half-added
    finally:
        directory.close()


def test_credentials_url_keeps_them_in_another_database(
    tmp_path: Path, fresh_postgres_url: str, postgres_server: object
) -> None:
    home = Home(tmp_path / "home")
    home.root.mkdir()
    other = postgres_server.url(postgres_server.create_database())  # type: ignore[attr-defined]
    assert credentials.separation_warning(fresh_postgres_url, other) is None
    assert credentials.separation_warning(fresh_postgres_url, None) is not None
    assert credentials.separation_warning(None, None) is None
    directory = Directory.open(home, fresh_postgres_url, credentials_url=other)
    try:
        assert directory.credentials_file is None
        directory.add_domain("example.com", secrets=True)
        directory.add_user("alice@example.com", "s3cret")
        assert directory.verify_password("alice@example.com", "s3cret")
        assert directory.auth_secrets("alice@example.com")[1] == "s3cret"
    finally:
        directory.close()
    engine = make_engine(home, fresh_postgres_url)
    try:
        with engine.connect() as conn:
            assert not conn.dialect.has_table(conn, "credentials")
    finally:
        engine.dispose()
    engine = make_engine(home, other)
    try:
        with engine.connect() as conn:
            hashes = conn.execute(select(credentials.credentials.c.password_hash)).scalars()
            assert all(h.startswith("$argon2id$") for h in hashes)
    finally:
        engine.dispose()


# -- the version 2 -> 3 migration ----------------------------------------------------


def _make_v2(home: Home, db: Engine) -> tuple[str, str]:
    """A version 2 directory as the previous release left it: credentials in users."""
    box = SecretBox.load(home.secrets_key, create=True)
    with db.begin() as conn:
        schema.metadata.drop_all(conn)
        if conn.dialect.has_table(conn, "credentials"):
            conn.execute(text("DROP TABLE credentials"))
        schema.install(conn)
        schema.vacations.drop(conn)  # version 4
        for column in ("has_password", "has_secrets", "junk_spam"):
            conn.execute(text(f"ALTER TABLE users DROP COLUMN {column}"))
        conn.execute(update(schema.schema_version).values(version=2))
        conn.execute(
            text(
                "INSERT INTO domains (id, name, unknown_user, created, secrets)"
                " VALUES (1, 'example.com', 'bounce', 0, true)"
            )
        )
        insert_user = text(
            "INSERT INTO users (domain_id, local_part, password_hash, flags, maildir, created,"
            " cram_md5, apop_secret) VALUES (1, :local, :hash, 0, :maildir, 0, :cram, :apop)"
        )
        hash_ = passwords.hash_password("s3cret")
        conn.execute(
            insert_user,
            {
                "local": "alice",
                "hash": hash_,
                "maildir": "domains/example.com/alice/Maildir",
                "cram": cram_md5_contexts("s3cret"),
                "apop": box.seal("s3cret"),
            },
        )
        conn.execute(
            insert_user,
            {
                "local": "bob",
                "hash": None,
                "maildir": "domains/example.com/bob/Maildir",
                "cram": None,
                "apop": None,
            },
        )
    return hash_, cram_md5_contexts("s3cret")


def _check_migrated(home: Home, db: Engine, directory_url: str | None) -> None:
    directory = Directory.open(home, directory_url)
    try:
        assert directory.verify_password("alice@example.com", "s3cret")
        assert not directory.verify_password("bob@example.com", "")
        assert directory.auth_secrets("alice@example.com") == (
            cram_md5_contexts("s3cret"),
            "s3cret",
        )
        alice, bob = directory.users()
        assert (alice.has_password, alice.has_secrets) == (True, True)
        assert (bob.has_password, bob.has_secrets) == (False, False)
    finally:
        directory.close()
    assert _users_credentials(db) == [(None, None, None), (None, None, None)]
    with db.connect() as conn:
        assert schema.stored_version(conn) == schema.SCHEMA_VERSION


def test_version_2_moves_its_credentials(home: Home, db: Engine, directory_url: str | None) -> None:
    if directory_url is None:
        credentials_file(home).unlink()  # a version 2 home has none
    hash_, _cram = _make_v2(home, db)
    db.dispose()
    _check_migrated(home, db, directory_url)
    if directory_url is None:
        assert stat.S_IMODE(os.stat(credentials_file(home)).st_mode) == 0o600
        # Blanked and purged: no hash left in the directory's file, not even in free pages.
        data = _sqlite_bytes(home.database)
        assert b"$argon2" not in data and hash_.encode() not in data


def test_a_crash_between_copy_and_blank_is_completed_by_the_next_open(
    home: Home, db: Engine, directory_url: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    _make_v2(home, db)

    def crash(conn: object) -> None:
        raise RuntimeError("crash after the credentials were committed")

    monkeypatch.setitem(schema.MIGRATIONS, 2, crash)
    with pytest.raises(RuntimeError):
        Directory.open(home, directory_url)
    with db.connect() as conn:
        assert schema.stored_version(conn) == 2  # rolled back: hashes still in users
    assert _users_credentials(db)[0][0] is not None
    monkeypatch.undo()
    _check_migrated(home, db, directory_url)
