"""Directory on a temporary SQLite file: domains, users, lookups, threads, schema version."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from sqlalchemy import create_engine, insert, select, text, update

from qtoaster.core.clock import FakeClock
from qtoaster.core.errors import TemporaryFailure
from qtoaster.core.home import Home
from qtoaster.directory import schema
from qtoaster.directory.schema import UserFlag
from qtoaster.directory.store import (
    Directory,
    DirectoryError,
    DirectoryUnavailable,
    create_directory,
    valid_address,
    valid_domain,
)


@pytest.fixture
def home(tmp_path: Path) -> Home:
    home = Home(tmp_path / "home")
    create_directory(home)
    return home


@pytest.fixture
def directory(home: Home) -> Iterator[Directory]:
    directory = Directory.open(home, clock=FakeClock(1_700_000_000.0))
    yield directory
    directory.close()


def test_create_directory_is_idempotent_and_private(home: Home) -> None:
    create_directory(home)
    assert stat.S_IMODE(os.stat(home.database).st_mode) == 0o600
    engine = create_engine(f"sqlite:///{home.database}")
    with engine.connect() as conn:
        assert conn.execute(select(schema.schema_version.c.version)).scalars().all() == [1]
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    engine.dispose()


def test_open_without_database_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DirectoryError, match="no directory database"):
        Directory.open(Home(tmp_path / "missing"))


def test_open_refuses_a_newer_schema(home: Home) -> None:
    engine = create_engine(f"sqlite:///{home.database}")
    with engine.begin() as conn:
        conn.execute(update(schema.schema_version).values(version=99))
    engine.dispose()
    with pytest.raises(DirectoryError, match="newer"):
        Directory.open(home)


def test_open_runs_pending_migrations(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[int] = []
    monkeypatch.setattr(schema, "SCHEMA_VERSION", 2)
    monkeypatch.setitem(schema.MIGRATIONS, 1, lambda conn: ran.append(1))
    Directory.open(home).close()
    assert ran == [1]
    engine = create_engine(f"sqlite:///{home.database}")
    with engine.connect() as conn:
        assert conn.execute(select(schema.schema_version.c.version)).scalar() == 2
    engine.dispose()


def test_domains(directory: Directory) -> None:
    directory.add_domain("Example.COM")
    directory.add_domain("b.example")
    assert directory.domains() == ["b.example", "example.com"]
    assert directory.hosts_domain("EXAMPLE.com")
    assert not directory.hosts_domain("other.example")
    with pytest.raises(DirectoryError, match="already exists"):
        directory.add_domain("example.com")
    directory.delete_domain("b.example")
    assert directory.domains() == ["example.com"]
    with pytest.raises(DirectoryError, match="unknown domain"):
        directory.delete_domain("b.example")


@pytest.mark.parametrize(
    "name", ["", "a..b", "-a.com", "a-.com", "a_b.com", "[127.0.0.1]", "a.com.", "x" * 64]
)
def test_invalid_domain_names(directory: Directory, name: str) -> None:
    with pytest.raises(DirectoryError, match="invalid domain"):
        directory.add_domain(name)


@pytest.mark.parametrize(
    "address", ["alice", "@example.com", "a/b@example.com", ".a@example.com", "a..b@x.com"]
)
def test_invalid_addresses(address: str) -> None:
    with pytest.raises(DirectoryError, match="invalid"):
        valid_address(address)


def test_valid_names_are_lower_cased() -> None:
    assert valid_domain("Mail.Example.COM") == "mail.example.com"
    assert valid_address("John.Doe+x@Example.com") == ("john.doe+x", "example.com")


def test_add_user_creates_private_maildir(home: Home, directory: Directory) -> None:
    directory.add_domain("example.com")
    directory.add_user("Alice@Example.com", None, quota=1000)
    maildir = home.maildir("example.com", "alice")
    assert maildir == home.root / "domains/example.com/alice/Maildir"
    for path in (maildir, maildir / "cur", maildir / "new", maildir / "tmp", maildir.parent):
        assert path.is_dir()
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    [info] = directory.users()
    assert info.address == "alice@example.com"
    assert info.quota == 1000
    assert info.maildir == maildir
    assert not info.has_password
    assert info.created == 1_700_000_000
    assert info.flags == UserFlag(0)


def test_add_user_errors(directory: Directory) -> None:
    with pytest.raises(DirectoryError, match=r"unknown domain: nowhere\.example"):
        directory.add_user("a@nowhere.example", None)
    directory.add_domain("example.com")
    directory.add_user("a@example.com", None)
    with pytest.raises(DirectoryError, match="already exists"):
        directory.add_user("A@EXAMPLE.COM", None)
    with pytest.raises(DirectoryError, match="invalid quota"):
        directory.add_user("b@example.com", None, quota=-1)


def test_users_and_delete_user(directory: Directory) -> None:
    directory.add_domain("a.example")
    directory.add_domain("b.example")
    directory.add_user("zed@a.example", None)
    directory.add_user("amy@b.example", None)
    directory.add_user("bob@a.example", None)
    assert [u.address for u in directory.users()] == [
        "bob@a.example",
        "zed@a.example",
        "amy@b.example",
    ]
    assert [u.address for u in directory.users("B.example")] == ["amy@b.example"]
    with pytest.raises(DirectoryError, match="unknown domain"):
        directory.users("c.example")
    directory.delete_user("Bob@A.example")
    assert [u.address for u in directory.users("a.example")] == ["zed@a.example"]
    with pytest.raises(DirectoryError, match="unknown user"):
        directory.delete_user("bob@a.example")


def test_delete_domain_removes_its_users(directory: Directory) -> None:
    directory.add_domain("a.example")
    directory.add_user("bob@a.example", None)
    directory.delete_domain("a.example")
    assert directory.users() == []
    directory.add_domain("a.example")
    directory.add_user("bob@a.example", None)  # the old row is really gone


def test_find_mailbox_case_and_extension(home: Home, directory: Directory) -> None:
    directory.add_domain("example.com")
    directory.add_user("alice@example.com", None)
    directory.add_user("alice-lists@example.com", None)
    alice = home.maildir("example.com", "alice")
    assert directory.find_mailbox("ALICE@Example.Com") == alice
    assert directory.find_mailbox("alice-news@example.com") == alice
    assert directory.find_mailbox("alice-news-daily@example.com") == alice
    assert directory.find_mailbox("alice-lists@example.com") == home.maildir(
        "example.com", "alice-lists"
    )
    assert directory.find_mailbox("bob@example.com") is None
    assert directory.find_mailbox("-alice@example.com") is None
    assert directory.find_mailbox("alice@other.example") is None
    assert directory.find_mailbox("alice") is None


def _set(home: Home, statement: object) -> None:
    engine = create_engine(f"sqlite:///{home.database}")
    with engine.begin() as conn:
        conn.execute(statement)  # type: ignore[call-overload]
    engine.dispose()


def test_bounce_mail_flag_hides_the_mailbox(home: Home, directory: Directory) -> None:
    directory.add_domain("example.com")
    directory.add_user("alice@example.com", None)
    _set(home, update(schema.users).values(flags=int(UserFlag.BOUNCE_MAIL)))
    assert directory.find_mailbox("alice@example.com") is None


def test_alias_domain_reaches_the_target_users(home: Home, directory: Directory) -> None:
    directory.add_domain("example.com")
    directory.add_user("alice@example.com", None)
    _set(home, insert(schema.domains).values(name="alias.example", alias_of=1, created=0))
    assert directory.hosts_domain("alias.example")
    assert directory.find_mailbox("alice@alias.example") == home.maildir("example.com", "alice")
    info = directory.user("alice@alias.example")
    assert info is not None and info.address == "alice@example.com"
    with pytest.raises(DirectoryError, match="alias"):
        directory.add_user("bob@alias.example", None)
    directory.delete_domain("example.com")
    assert directory.domains() == []


def test_max_users(home: Home, directory: Directory) -> None:
    directory.add_domain("example.com")
    _set(home, update(schema.domains).values(max_users=1))
    directory.add_user("a@example.com", None)
    with pytest.raises(DirectoryError, match="maximum"):
        directory.add_user("b@example.com", None)


def test_verify_password(home: Home, directory: Directory) -> None:
    directory.add_domain("example.com")
    directory.add_user("alice@example.com", "s3cret")
    directory.add_user("bob@example.com", None)
    assert directory.verify_password("Alice@example.com", "s3cret")
    assert not directory.verify_password("alice@example.com", "wrong")
    assert not directory.verify_password("bob@example.com", "")
    assert not directory.verify_password("nobody@example.com", "s3cret")
    assert not directory.verify_password("alice-ext@example.com", "s3cret")
    _set(home, update(schema.users).values(flags=int(UserFlag.DISABLED)))
    assert not directory.verify_password("alice@example.com", "s3cret")


def test_weak_hash_is_upgraded_on_login(home: Home, directory: Directory) -> None:
    directory.add_domain("example.com")
    directory.add_user("alice@example.com", None)
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("pw")
    _set(home, update(schema.users).values(password_hash=weak))
    assert directory.verify_password("alice@example.com", "pw")
    engine = create_engine(f"sqlite:///{home.database}")
    with engine.connect() as conn:
        stored = conn.execute(select(schema.users.c.password_hash)).scalar()
    engine.dispose()
    assert stored is not None and stored != weak
    assert stored.startswith("$argon2id$")
    assert directory.verify_password("alice@example.com", "pw")


def test_lookup_is_one_indexed_query(directory: Directory) -> None:
    directory.add_domain("example.com")
    query = directory._lookup.where(
        directory._asked.c.name == "example.com", schema.users.c.local_part.in_(["a", "b"])
    )
    with directory._engine.connect() as conn:
        sql = str(query.compile(conn, compile_kwargs={"literal_binds": True}))
        plan = " ".join(row[-1] for row in conn.execute(text("EXPLAIN QUERY PLAN " + sql)))
    assert "SCAN" not in plan, plan


def test_threads_share_one_directory(directory: Directory) -> None:
    directory.add_domain("example.com")
    directory.add_user("alice@example.com", None)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(50):
                assert directory.find_mailbox("alice@example.com") is not None
                if i % 10 == 0:
                    directory.add_user(f"u{n}x{i}@example.com", None)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(directory.users()) == 1 + 6 * 5


def test_database_trouble_is_temporary(home: Home, directory: Directory) -> None:
    directory.add_domain("example.com")
    _set(home, text("DROP TABLE users"))
    with pytest.raises(DirectoryUnavailable) as caught:
        directory.find_mailbox("alice@example.com")
    assert isinstance(caught.value, TemporaryFailure)
