"""Mail that mailauth quarantined (its mark, ``X-Qtoaster-Quarantine: junk``) is filed
into the user's ``.Junk`` folder, made when missing; other mail is not."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from qtoaster.core.home import Home
from qtoaster.core.outcome import Outcome
from qtoaster.delivery.local import LocalAgent
from qtoaster.directory.store import Directory, create_directory

QUEUE_HEADER = b"queue-envelope\n"


@dataclass(frozen=True)
class Controls:
    me: str = "mx.example.com"
    locals: frozenset[str] = frozenset({"mx.example.com"})
    defaultdomain: str = "example.com"


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[LocalAgent, Home]]:
    home = Home(tmp_path / "home")
    create_directory(home)
    directory = Directory.open(home)
    directory.add_domain("example.com")
    directory.add_user("alice@example.com", None)
    yield LocalAgent(home, Controls(), directory, fsync=False), home
    directory.close()


def deliver(agent: LocalAgent, tmp_path: Path, message: bytes) -> None:
    path = tmp_path / "msg"
    path.write_bytes(QUEUE_HEADER + message)
    result = agent.deliver(path, len(QUEUE_HEADER), "x@y.example", "alice@example.com")
    assert result.outcome is Outcome.SUCCESS


def test_marked_mail_goes_to_junk(agent: tuple[LocalAgent, Home], tmp_path: Path) -> None:
    local, home = agent
    maildir = home.maildir("example.com", "alice")
    deliver(local, tmp_path, b"X-Qtoaster-Quarantine: junk\nSubject: spoof\n\nbody\n")
    junk = maildir / ".Junk"
    assert (junk / "maildirfolder").exists()
    assert len(os.listdir(junk / "new")) == 1
    assert os.listdir(maildir / "new") == []
    deliver(local, tmp_path, b"x-qtoaster-quarantine: JUNK\nSubject: again\n\nbody\n")
    assert len(os.listdir(junk / "new")) == 2


def test_tagged_and_unmarked_mail_stay_in_the_inbox(
    agent: tuple[LocalAgent, Home], tmp_path: Path
) -> None:
    local, home = agent
    maildir = home.maildir("example.com", "alice")
    deliver(local, tmp_path, b"X-Qtoaster-Quarantine: tag\nSubject: s\n\nbody\n")
    deliver(local, tmp_path, b"Subject: s\n\nX-Qtoaster-Quarantine: junk\n")  # body, not header
    assert len(os.listdir(maildir / "new")) == 2
    assert not (maildir / ".Junk").exists()
