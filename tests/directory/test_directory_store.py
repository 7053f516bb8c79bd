"""Directory on SQLite and PostgreSQL: domains, users, lookups, threads, schema version.

Most tests run twice through the ``directory_url`` fixture (tests/directory/conftest.py):
on a temporary SQLite file and on a fresh database of the session's PostgreSQL.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from sqlalchemy import Engine, create_engine, insert, select, text, update

from qtoaster.core.clock import FakeClock
from qtoaster.core.errors import TemporaryFailure
from qtoaster.core.home import Home
from qtoaster.directory import credentials, schema
from qtoaster.directory.engine import make_engine
from qtoaster.directory.model import valid_target
from qtoaster.directory.schema import UNKNOWN_BOUNCE, UserFlag
from qtoaster.directory.store import (
    Directory,
    DirectoryError,
    DirectoryUnavailable,
    create_directory,
    valid_address,
    valid_domain,
)


@pytest.fixture
def sqlite_home(tmp_path: Path) -> Home:
    home = Home(tmp_path / "home")
    create_directory(home)
    return home


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
    """A second engine on the directory's database, for changes behind its back."""
    engine = make_engine(home, directory_url)
    yield engine
    engine.dispose()


@pytest.fixture
def directory(home: Home, directory_url: str | None) -> Iterator[Directory]:
    directory = Directory.open(home, directory_url, clock=FakeClock(1_700_000_000.0))
    yield directory
    directory.close()


def _set(db: Engine, statement: object) -> None:
    with db.begin() as conn:
        conn.execute(statement)  # type: ignore[call-overload]


def test_create_directory_is_idempotent_and_private(sqlite_home: Home) -> None:
    create_directory(sqlite_home)
    assert stat.S_IMODE(os.stat(sqlite_home.database).st_mode) == 0o600
    engine = create_engine(f"sqlite:///{sqlite_home.database}")
    with engine.connect() as conn:
        versions = conn.execute(select(schema.schema_version.c.version)).scalars().all()
        assert versions == [schema.SCHEMA_VERSION]
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "delete"  # decision 0007
    engine.dispose()


def test_open_without_database_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DirectoryError, match="no directory database"):
        Directory.open(Home(tmp_path / "missing"))


def test_open_unreachable_postgresql_is_temporary(tmp_path: Path) -> None:
    # Port 1 on loopback: refused at once.  The password must not reach the message.
    with pytest.raises(DirectoryUnavailable) as caught:
        Directory.open(Home(tmp_path), "postgresql://u:s3cret@127.0.0.1:1/db")
    assert "s3cret" not in str(caught.value)


def test_open_installs_the_schema_once(home: Home, db: Engine, directory_url: str | None) -> None:
    Directory.open(home, directory_url).close()  # a second open keeps the tables
    with db.connect() as conn:
        versions = conn.execute(select(schema.schema_version.c.version)).scalars().all()
    assert versions == [schema.SCHEMA_VERSION]


def test_open_refuses_a_newer_schema(home: Home, db: Engine, directory_url: str | None) -> None:
    _set(db, update(schema.schema_version).values(version=99))
    with pytest.raises(DirectoryError, match="newer"):
        Directory.open(home, directory_url)


def test_open_runs_pending_migrations(
    home: Home, db: Engine, directory_url: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[int] = []
    current = schema.SCHEMA_VERSION
    monkeypatch.setattr(schema, "SCHEMA_VERSION", current + 1)
    monkeypatch.setitem(schema.MIGRATIONS, current, lambda conn: ran.append(current))
    Directory.open(home, directory_url).close()
    assert ran == [current]
    with db.connect() as conn:
        assert conn.execute(select(schema.schema_version.c.version)).scalar() == current + 1


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


def test_bounce_mail_flag_hides_the_mailbox(db: Engine, directory: Directory) -> None:
    directory.add_domain("example.com")
    directory.add_user("alice@example.com", None)
    _set(db, update(schema.users).values(flags=int(UserFlag.BOUNCE_MAIL)))
    assert directory.find_mailbox("alice@example.com") is None


def test_alias_domain_reaches_the_target_users(
    home: Home, db: Engine, directory: Directory
) -> None:
    directory.add_domain("example.com")
    directory.add_user("alice@example.com", None)
    target = select(schema.domains.c.id).where(schema.domains.c.name == "example.com")
    alias = {"name": "alias.example", "alias_of": target.scalar_subquery(), "created": 0}
    _set(db, insert(schema.domains).values(**alias))
    assert directory.hosts_domain("alias.example")
    assert directory.find_mailbox("alice@alias.example") == home.maildir("example.com", "alice")
    info = directory.user("alice@alias.example")
    assert info is not None and info.address == "alice@example.com"
    with pytest.raises(DirectoryError, match="alias"):
        directory.add_user("bob@alias.example", None)
    directory.delete_domain("example.com")
    assert directory.domains() == []


def test_max_users(db: Engine, directory: Directory) -> None:
    directory.add_domain("example.com")
    _set(db, update(schema.domains).values(max_users=1))
    directory.add_user("a@example.com", None)
    with pytest.raises(DirectoryError, match="maximum"):
        directory.add_user("b@example.com", None)


def test_verify_password(db: Engine, directory: Directory) -> None:
    directory.add_domain("example.com")
    directory.add_user("alice@example.com", "s3cret")
    directory.add_user("bob@example.com", None)
    assert directory.verify_password("Alice@example.com", "s3cret")
    assert not directory.verify_password("alice@example.com", "wrong")
    assert not directory.verify_password("bob@example.com", "")
    assert not directory.verify_password("nobody@example.com", "s3cret")
    assert not directory.verify_password("alice-ext@example.com", "s3cret")
    _set(db, update(schema.users).values(flags=int(UserFlag.DISABLED)))
    assert not directory.verify_password("alice@example.com", "s3cret")


def test_weak_hash_is_upgraded_on_login(db: Engine, directory: Directory) -> None:
    directory.add_domain("example.com")
    directory.add_user("alice@example.com", None)
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("pw")
    # As a hash of an older release would be stored: in the credential store.
    _set(db, update(schema.users).values(has_password=True))
    creds = directory._credentials().engine
    _set(creds, update(credentials.credentials).values(password_hash=weak))
    assert directory.verify_password("alice@example.com", "pw")
    with creds.connect() as conn:
        stored = conn.execute(select(credentials.credentials.c.password_hash)).scalar()
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
        if conn.dialect.name == "sqlite":
            plan = " ".join(row[-1] for row in conn.execute(text("EXPLAIN QUERY PLAN " + sql)))
            assert "SCAN" not in plan, plan
        else:
            # Tiny tables make a sequential scan the cheapest plan; forbidding it shows
            # whether an index serves every probe (else PostgreSQL scans regardless).
            conn.execute(text("SET enable_seqscan = off"))
            plan = " ".join(row[0] for row in conn.execute(text("EXPLAIN " + sql)))
            assert "Seq Scan" not in plan, plan
            conn.rollback()


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


def test_database_trouble_is_temporary(db: Engine, directory: Directory) -> None:
    directory.add_domain("example.com")
    _set(db, text("DROP TABLE vacations"))  # it refers to users (PostgreSQL)
    _set(db, text("DROP TABLE users"))
    with pytest.raises(DirectoryUnavailable) as caught:
        directory.find_mailbox("alice@example.com")
    assert isinstance(caught.value, TemporaryFailure)


def test_a_failed_insert_leaves_the_transaction_usable(directory: Directory) -> None:
    # PostgreSQL aborts a whole transaction on an error unless it ran in a savepoint.
    directory.add_domain("example.com")
    directory.add_user("a@example.com", None)
    with pytest.raises(DirectoryError, match="already exists"):
        directory.add_domain("EXAMPLE.com")
    with pytest.raises(DirectoryError, match="already exists"):
        directory.add_user("a@example.com", None)
    directory.add_user("b@example.com", None)
    assert [u.address for u in directory.users()] == ["a@example.com", "b@example.com"]


def _token_moves(directory: Directory, before: int | None) -> bool:
    token = directory.change_token()
    return token is not None and token != before


def test_change_token_moves_after_a_write(directory: Directory) -> None:
    before = directory.change_token()  # ChangeWatcher waits for LISTEN when it starts
    assert before is not None
    deadline = time.monotonic() + 10.0
    directory.add_domain("example.com")
    while not _token_moves(directory, before):
        assert time.monotonic() < deadline, "the change token did not move"
        time.sleep(0.01)  # poll interval, bounded by the deadline


def test_a_nul_in_a_lookup_is_not_found(directory: Directory) -> None:
    # PostgreSQL refuses NUL in text: that must be "no such user", not an outage (4xx).
    directory.add_domain("example.com")
    directory.add_user("a@example.com", "pw")
    assert directory.find_mailbox("a\x00b@example.com") is None
    assert not directory.hosts_domain("exa\x00mple.com")
    assert not directory.verify_password("a\x00@example.com", "pw")


def test_an_undecodable_lookup_is_not_found(directory: Directory) -> None:
    # Envelope addresses are decoded with surrogateescape (core/envelope.py): a non-UTF-8
    # byte arrives as a lone surrogate, which no database driver can encode.
    directory.add_domain("example.com")
    assert directory.find_mailbox("a\udcff@example.com") is None
    assert not directory.hosts_domain("ex\udcffample.com")


@pytest.mark.parametrize("local", ["nobody\udcff", "nobod\u00e9", "a\x00b"])
def test_an_unstorable_local_part_is_an_unknown_user_of_a_hosted_domain(
    directory: Directory, local: str
) -> None:
    # Issue 12 item 5: "not hosted" (None) made chkuser accept it and delivery bounce it.
    directory.add_domain("example.com")
    found = directory.resolve(f"{local}@Example.COM")
    assert found is not None
    assert (found.domain, found.user, found.forwards) == ("example.com", None, ())
    assert found.unknown_user == UNKNOWN_BOUNCE and not found.exists
    assert directory.resolve(f"{local}@ex\udcffample.com") is None


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("alice@", "invalid address 'alice@': the domain is missing"),
        ("@example.com", "invalid address '@example.com': the local part is missing"),
        ("@", "invalid address '@': the domain is missing"),
    ],
)
def test_an_empty_part_is_named(address: str, message: str) -> None:
    # Was "invalid domain name: ''" for alice@, which names neither the address nor the fault.
    with pytest.raises(DirectoryError) as caught:
        valid_address(address)
    assert str(caught.value) == message
    with pytest.raises(DirectoryError) as caught:
        valid_target(address)
    assert str(caught.value) == message


def test_idna_domain_and_utf8_mailbox(home: Home, directory: Directory) -> None:
    """Decision 0021: a domain is stored as its A-labels and found by either spelling; a
    UTF-8 local part is stored lower-cased in NFC, its Maildir a UTF-8 directory name."""
    directory.add_domain("Bücher.example")
    assert directory.domains() == ["xn--bcher-kva.example"]
    assert directory.hosts_domain("bücher.example")
    assert directory.hosts_domain("XN--BCHER-KVA.example")
    with pytest.raises(DirectoryError, match="already exists"):
        directory.add_domain("xn--bcher-kva.example")
    directory.add_user("JÖRG@bücher.example", None)
    maildir = home.root / "domains/xn--bcher-kva.example/jörg/Maildir"
    assert (maildir / "new").is_dir()
    decomposed = "jo\u0308rg@xn--bcher-kva.example"  # NFD: the same name
    assert directory.find_mailbox(decomposed) == maildir
    found = directory.resolve("Jörg@BÜCHER.example")
    assert found is not None and found.exists and found.domain == "xn--bcher-kva.example"
    unknown = directory.resolve("zoë@bücher.example")
    assert unknown is not None and not unknown.exists
    invalid = directory.resolve("bad\udcff@bücher.example")  # not UTF-8: no such user
    assert invalid is not None and not invalid.exists
    directory.add_alias("grüße@bücher.example", ["jörg@bücher.example"])
    alias = directory.resolve("GRÜSSE@xn--bcher-kva.example")
    assert alias is None or not alias.forwards  # 'ß' lower-cases to itself, not 'ss'
    assert directory.resolve("grüße@xn--bcher-kva.example").forwards == (  # type: ignore[union-attr]
        "jörg@xn--bcher-kva.example",
    )


@pytest.mark.parametrize(
    "address",
    [
        "a\u202eb@x.example",
        "a b@x.example",
        "a\u200db@x.example",
        "€@x.example",
        "ü" * 33 + "@x.de",
    ],
)
def test_utf8_local_parts_refused(address: str) -> None:
    """Only letters, marks and digits beyond ASCII (no bidi override, zero-width joiner,
    symbol or space), at most 64 octets."""
    with pytest.raises(DirectoryError, match="invalid address"):
        valid_address(address)
