"""LocalAgent: routing (hosted domains, locals, extensions), loop check, qmail's reports."""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from qtoaster.core.home import Home
from qtoaster.core.outcome import Outcome, Result
from qtoaster.delivery.local import (
    DELIVERED,
    DIRECTORY_UNAVAILABLE,
    HEADER_LIMIT,
    LOOPING,
    MAILDIR_TEMPORARY,
    NO_MAILBOX,
    UNREADABLE_MESSAGE,
    LocalAgent,
)
from qtoaster.directory.store import Directory, create_directory

QUEUE_HEADER = b"queue-envelope-that-is-not-delivered\n"
MESSAGE = b"Received: from x\nSubject: hi\n\nhello\n"


@dataclass(frozen=True)
class FakeControls:
    me: str = "mx.example.com"
    locals: frozenset[str] = frozenset({"mx.example.com", "localhost"})
    defaultdomain: str = "example.com"


@pytest.fixture
def home(tmp_path: Path) -> Home:
    home = Home(tmp_path / "home")
    create_directory(home)
    return home


@pytest.fixture
def directory(home: Home) -> Iterator[Directory]:
    directory = Directory.open(home)
    directory.add_domain("example.com")
    directory.add_user("alice@example.com", None)
    directory.add_user("postmaster@example.com", None)
    yield directory
    directory.close()


@pytest.fixture
def agent(home: Home, directory: Directory) -> LocalAgent:
    return LocalAgent(home, FakeControls(), directory, fsync=False)


def write_message(path: Path, message: bytes = MESSAGE) -> tuple[Path, int]:
    """A queue-like file: some bytes before the message, the message from an offset."""
    path.write_bytes(QUEUE_HEADER + message)
    return path, len(QUEUE_HEADER)


def delivered(home: Home, user: str) -> list[bytes]:
    new = home.maildir("example.com", user) / "new"
    return [(new / name).read_bytes() for name in sorted(os.listdir(new))]


def test_is_local(agent: LocalAgent) -> None:
    assert agent.is_local("alice@example.com")
    assert agent.is_local("anyone@EXAMPLE.com")  # the domain decides, not the user
    assert agent.is_local("root@localhost")
    assert agent.is_local("root@MX.example.com")
    assert not agent.is_local("alice@example.org")
    assert not agent.is_local("alice")


def test_delivery_writes_prefix_and_message(agent: LocalAgent, home: Home, tmp_path: Path) -> None:
    message, offset = write_message(tmp_path / "msg")
    result = agent.deliver(message, offset, "bob@example.org", "Alice@EXAMPLE.COM")
    assert result == Result(Outcome.SUCCESS, DELIVERED)
    assert result.report == "did 1+0+0/"
    assert delivered(home, "alice") == [
        b"Return-Path: <bob@example.org>\nDelivered-To: Alice@example.com\n" + MESSAGE
    ]
    assert os.listdir(home.maildir("example.com", "alice") / "tmp") == []


def test_null_sender(agent: LocalAgent, home: Home, tmp_path: Path) -> None:
    message, offset = write_message(tmp_path / "msg")
    assert agent.deliver(message, offset, "", "alice@example.com").outcome is Outcome.SUCCESS
    assert delivered(home, "alice")[0].startswith(b"Return-Path: <>\n")


def test_locals_go_to_the_default_domain(agent: LocalAgent, home: Home, tmp_path: Path) -> None:
    message, offset = write_message(tmp_path / "msg")
    result = agent.deliver(message, offset, "x@y.example", "postmaster@mx.example.com")
    assert result.outcome is Outcome.SUCCESS
    [stored] = delivered(home, "postmaster")
    assert b"\nDelivered-To: postmaster@mx.example.com\n" in stored
    result = agent.deliver(message, offset, "x@y.example", "nobody@localhost")
    assert result == Result(Outcome.PERMANENT, NO_MAILBOX)


def test_extension_goes_to_the_user(agent: LocalAgent, home: Home, tmp_path: Path) -> None:
    message, offset = write_message(tmp_path / "msg")
    result = agent.deliver(message, offset, "x@y.example", "alice-lists@example.com")
    assert result.outcome is Outcome.SUCCESS
    assert b"Delivered-To: alice-lists@example.com\n" in delivered(home, "alice")[0]


@pytest.mark.parametrize("recipient", ["bob@example.com", "alice@example.org", "alice"])
def test_no_mailbox_is_permanent(agent: LocalAgent, tmp_path: Path, recipient: str) -> None:
    message, offset = write_message(tmp_path / "msg")
    result = agent.deliver(message, offset, "x@y.example", recipient)
    assert result == Result(Outcome.PERMANENT, "Sorry, no mailbox here by that name. (#5.1.1)")


@pytest.mark.parametrize("eol", [b"\n", b"\r\n"])
def test_loop_is_permanent(agent: LocalAgent, home: Home, tmp_path: Path, eol: bytes) -> None:
    looping = b"Delivered-To: alice@example.com" + eol + MESSAGE
    message, offset = write_message(tmp_path / "msg", looping)
    result = agent.deliver(message, offset, "x@y.example", "alice@example.com")
    assert result == Result(
        Outcome.PERMANENT,
        "This message is looping: it already has my Delivered-To line. (#5.4.6)",
    )
    assert result.report == LOOPING
    assert delivered(home, "alice") == []


@pytest.mark.parametrize(
    "message",
    [
        b"Delivered-To: postmaster@example.com\n" + MESSAGE,  # another recipient's line
        b"Delivered-To: alice@example.com.evil\n" + MESSAGE,  # not exactly the line
        MESSAGE + b"Delivered-To: alice@example.com\n",  # in the body, not the header
        b"X: " + b"y" * HEADER_LIMIT + b"\nDelivered-To: alice@example.com\n\nbody\n",
    ],
    ids=["other", "longer", "body", "beyond-limit"],
)
def test_no_loop(agent: LocalAgent, tmp_path: Path, message: bytes) -> None:
    path, offset = write_message(tmp_path / "msg", message)
    result = agent.deliver(path, offset, "x@y.example", "alice@example.com")
    assert result.outcome is Outcome.SUCCESS


def test_a_second_delivery_of_the_delivered_copy_loops(
    agent: LocalAgent, home: Home, tmp_path: Path
) -> None:
    message, offset = write_message(tmp_path / "msg")
    agent.deliver(message, offset, "x@y.example", "alice@example.com")
    [stored] = delivered(home, "alice")
    again, offset = write_message(tmp_path / "again", stored)
    assert agent.deliver(again, offset, "x@y.example", "alice@example.com").report == LOOPING


def _deliver_read_only(agent: LocalAgent, message: Path, offset: int, recipient: str) -> Result:
    """Deliver with the Maildir's tmp/ read-only; as root, in a child that is not root."""
    if os.geteuid() != 0:
        return agent.deliver(message, offset, "x@y.example", recipient)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read)
            os.setgid(65534)
            os.setuid(65534)  # nobody: directory permissions apply again
            result = agent.deliver(message, offset, "x@y.example", recipient)
            os.write(write, f"{result.outcome.value}\n{result.report}".encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        outcome, _, report = pipe.read().decode().partition("\n")
    os.waitpid(pid, 0)
    return Result(Outcome(outcome), report)


def test_read_only_maildir_is_temporary() -> None:
    # Under a world-searchable directory, so that the unprivileged child can reach it.
    base = Path(tempfile.mkdtemp(prefix="qtoaster-ro-"))
    try:
        os.chmod(base, 0o755)
        home = Home(base / "home")
        create_directory(home)
        directory = Directory.open(home)
        directory.add_domain("example.com")
        directory.add_user("alice@example.com", None)
        agent = LocalAgent(home, FakeControls(), directory, fsync=False)
        maildir = home.maildir("example.com", "alice")
        for path in (home.domains, maildir.parent.parent, maildir.parent, maildir):
            os.chmod(path, 0o755)
        os.chmod(maildir / "tmp", 0o555)
        message, offset = write_message(base / "msg")
        os.chmod(message, 0o644)
        # Routing happens in the parent: the child cannot open the 0600 database.
        directory.hosts_domain = lambda name: True  # type: ignore[method-assign]
        directory.find_mailbox = lambda address: maildir  # type: ignore[method-assign]
        directory.change_token = lambda: 0  # type: ignore[method-assign]
        result = _deliver_read_only(agent, message, offset, "alice@example.com")
        directory.close()
    finally:
        shutil.rmtree(base)
    assert result.outcome is Outcome.TEMPORARY
    assert result.report == f"{MAILDIR_TEMPORARY} Permission denied"


def test_broken_maildir_is_temporary(agent: LocalAgent, home: Home, tmp_path: Path) -> None:
    tmp = home.maildir("example.com", "alice") / "tmp"
    tmp.rmdir()
    tmp.write_bytes(b"")  # fails for root too
    message, offset = write_message(tmp_path / "msg")
    result = agent.deliver(message, offset, "x@y.example", "alice@example.com")
    assert result == Result(
        Outcome.TEMPORARY, "Temporary error on maildir delivery. (#4.3.0) Not a directory"
    )


def test_missing_message_is_temporary(agent: LocalAgent, tmp_path: Path) -> None:
    result = agent.deliver(tmp_path / "gone", 0, "x@y.example", "alice@example.com")
    assert result.outcome is Outcome.TEMPORARY
    assert result.report.startswith(UNREADABLE_MESSAGE)


def test_database_trouble_is_temporary(agent: LocalAgent, home: Home, tmp_path: Path) -> None:
    with sqlite3.connect(home.database) as conn:
        conn.execute("DROP TABLE users")
    message, offset = write_message(tmp_path / "msg")
    result = agent.deliver(message, offset, "x@y.example", "alice@example.com")
    assert result == Result(Outcome.TEMPORARY, DIRECTORY_UNAVAILABLE)


def test_deliveries_from_a_thread_pool(agent: LocalAgent, home: Home, tmp_path: Path) -> None:
    paths = [write_message(tmp_path / f"m{i}", MESSAGE + b"%d\n" % i) for i in range(16)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(
            pool.map(lambda p: agent.deliver(p[0], p[1], "x@y.example", "alice@example.com"), paths)
        )
    assert all(r.outcome is Outcome.SUCCESS for r in results)
    stored = delivered(home, "alice")
    assert len(stored) == 16
    assert {s.rsplit(b"\n", 2)[-2] for s in stored} == {b"%d" % i for i in range(16)}
