"""Applying a vpopmail plan to a real directory (SQLite): what lands in the database, the
Maildir copies, idempotence, the dry run, and a source left exactly as it was."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from qtoaster.core.clock import FakeClock
from qtoaster.core.home import Home
from qtoaster.directory.schema import UserFlag
from qtoaster.directory.store import Directory, create_directory
from qtoaster.importer.apply import apply_plan
from qtoaster.importer.mysqldump import parse_dump
from qtoaster.importer.vpopmail import read_installation
from qtoaster.maildir.copy import copy_maildir

from .tree import ALICE_PW, BOB_PW, HASHES, build, dump_text, snapshot


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


def _names(maildir: Path) -> set[str]:
    return {str(p.relative_to(maildir)) for p in maildir.rglob("*") if p.is_file()}


def test_import_tree(tmp_path: Path, home: Home, directory: Directory) -> None:
    source = build(tmp_path)
    before = snapshot(source)
    report = apply_plan(read_installation(source), directory, home)
    assert snapshot(source) == before  # never modified: contents, modes, mtimes
    assert report.failed  # the ezmlm program alias was skipped with an error
    assert directory.domains() == ["example.com", "example.net", "example.org"]
    com = directory.domain("example.com")
    assert com is not None and com.unknown_user == "postmaster@example.com"
    assert com.alias_domains == ("example.net",)
    alice = directory.user("alice@example.net")  # through the alias domain
    assert alice is not None and alice.quota == 52428800 and alice.quota_messages == 1000
    bob = directory.user("bob@example.com")
    assert bob is not None
    assert bob.flags == UserFlag.NO_POP | UserFlag.NO_SMTP_AUTH | UserFlag.NO_IMAP
    carol = directory.user("carol@example.com")
    assert carol is not None and carol.flags == UserFlag.BOUNCE_MAIL | UserFlag.NO_RELAY
    # The crypt(3) hashes work as they are (and are rehashed to argon2 by the store).
    assert directory.verify_password("alice@example.com", ALICE_PW)
    assert directory.verify_password("dave@example.org", BOB_PW)
    assert not directory.verify_password("dave@example.org", ALICE_PW)
    assert directory.verify_password("postmaster@example.com", "clear-pm")
    targets = {(a.address, a.target, a.keep_copy) for a in directory.aliases("example.com")}
    assert ("info@example.com", "bob@example.com", False) in targets
    assert ("alice@example.com", "alice@elsewhere.example", True) in targets
    assert ("sales.team@example.com", "bob@example.com", False) in targets
    assert not any(address.startswith("list@") for address, _, _ in targets)
    # Mail: names and flags kept, subfolders copied, maildirsize and tmp/ files left out.
    copied = _names(home.maildir("example.com", "alice"))
    assert copied == {
        "new/1700000000.M1P1.old,S=20",
        "cur/1700000001.M2P1.old,S=20:2,RS",
        ".Sent/cur/1700000003.M4P1.old,S=21:2,S",
        ".Sent/maildirfolder",
        ".Sent/new/.keep",
    }
    assert (home.maildir("example.com", "alice") / "tmp").is_dir()
    counts = report.domains["example.com"]
    assert (counts.added, counts.users, counts.aliases, counts.alias_domains) == (True, 4, 3, 1)
    assert counts.messages == 4  # alice 3, bob 1 (.keep is no message: its name starts with ".")
    assert report.dropped_flags == {}  # NO_IMAP is carried over since IMAP exists
    assert not list(home.maildir("example.com", "alice").parent.glob(".Maildir.*"))


def test_second_run_changes_nothing(tmp_path: Path, home: Home, directory: Directory) -> None:
    source = build(tmp_path)
    apply_plan(read_installation(source), directory, home)
    users = directory.users()
    aliases = directory.aliases()
    mail = _names(home.domains)
    again = apply_plan(read_installation(source), directory, home)
    assert directory.users() == users and directory.aliases() == aliases
    assert _names(home.domains) == mail
    assert all(c.users == 0 and c.aliases == 0 for c in again.domains.values())
    skipped = [i for i in again.issues if not i.error]
    assert any(i.item == "user alice@example.com" and i.reason == "exists" for i in skipped)
    assert any(i.item == "mail of alice@example.com" for i in skipped)
    assert any(i.item == "domain example.org" for i in skipped)


def test_dry_run_changes_nothing(tmp_path: Path, home: Home, directory: Directory) -> None:
    source = build(tmp_path)
    report = apply_plan(read_installation(source), directory, home, dry_run=True)
    assert directory.domains() == [] and not home.domains.exists()
    assert report.domains["example.com"].users == 4
    assert report.domains["example.com"].messages == 4
    assert report.lines()[0] == "dry run: nothing was changed"


def test_no_mail(tmp_path: Path, home: Home, directory: Directory) -> None:
    apply_plan(read_installation(build(tmp_path)), directory, home, copy_mail=False)
    assert _names(home.maildir("example.com", "alice")) == set()


def test_crashed_copy_is_redone(tmp_path: Path) -> None:
    source = build(tmp_path) / "domains/example.com/alice/Maildir"
    destination = tmp_path / "out" / "alice" / "Maildir"
    staging = destination.with_name(".Maildir.importing")
    (staging / "new").mkdir(parents=True)
    (staging / "new" / "half-copied").write_text("x")
    destination.mkdir()  # the empty Maildir made by add_user
    (destination / "new").mkdir()
    (destination / "new" / "delivered-meanwhile").write_text("y")
    assert copy_maildir(source, destination) == 3
    assert not staging.exists() and "new/half-copied" not in _names(destination)
    assert "new/delivered-meanwhile" in _names(destination)  # never lose mail
    assert os.stat(destination / "new").st_mode & 0o777 == 0o700


def test_import_from_dump(tmp_path: Path, home: Home, directory: Directory) -> None:
    source = build(tmp_path)
    for vpasswd in (source / "domains").glob("*/vpasswd"):
        vpasswd.unlink()  # MySQL backend: no vpasswd files, Maildirs still on disk
    report = apply_plan(read_installation(source, tables=parse_dump(dump_text())), directory, home)
    assert {u.address for u in directory.users()} == {
        "alice@example.com",
        "bob@example.com",
        "carol@example.com",
        "postmaster@example.com",
        "dave@example.org",
    }
    assert directory.verify_password("bob@example.com", BOB_PW)
    help_targets = {a.target for a in directory.aliases() if a.address == "help@example.com"}
    assert help_targets == {"alice@example.com", "bob@example.com"}
    assert any("prog@example.com" in i.item for i in report.issues if i.error)
    assert report.domains["example.com"].messages == 4
    assert HASHES.alice.startswith("$1$") and HASHES.bob.startswith("$6$")
