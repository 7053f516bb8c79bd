"""The local agent with a user's choices: mail the spam scanner marked goes to .Junk for
a user who chose it (Maildir++ folder made when missing, quota counted), the INBOX for
others; a user on vacation answers a message in its INBOX once per sender and period,
through the queue, with the null sender (docs/vacation.md)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from qtoaster.core.clock import FakeClock
from qtoaster.core.home import Home
from qtoaster.core.outcome import Outcome
from qtoaster.delivery.local import LocalAgent
from qtoaster.delivery.vacationstate import MAX_SENDERS, STATE_FILE, opened
from qtoaster.directory.model import DAY
from qtoaster.directory.store import Directory, Vacation, create_directory
from qtoaster.maildir.quota import Quota
from qtoaster.queue.store import QueueStore

QUEUE_HEADER = b"queue-envelope\n"
SPAM = b"X-Spam-Status: Yes, score=9.0 required=5.0\nTo: alice@example.com\nSubject: s\n\nb\n"
HAM = b"X-Spam-Status: No, score=0.0\nTo: alice@example.com\nSubject: s\n\nb\n"


@dataclass(frozen=True)
class Controls:
    me: str = "mx.example.com"
    locals: frozenset[str] = frozenset({"mx.example.com"})
    defaultdomain: str = "example.com"


@dataclass
class Setup:
    agent: LocalAgent
    home: Home
    directory: Directory
    queue: QueueStore
    clock: FakeClock
    path: Path


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    home = Home(tmp_path / "home")
    create_directory(home)
    directory = Directory.open(home)
    directory.add_domain("example.com")
    for user in ("alice", "bob"):
        directory.add_user(f"{user}@example.com", None)
    QueueStore.create(tmp_path / "queue")
    queue = QueueStore(tmp_path / "queue", fsync=False)
    clock = FakeClock()
    agent = LocalAgent(home, Controls(), directory, fsync=False, queue=queue, clock=clock)
    yield Setup(agent, home, directory, queue, clock, tmp_path / "msg")
    directory.close()


def deliver(
    s: Setup, message: bytes, rcpt: str = "alice@example.com", sender: str = "d@x.test"
) -> None:
    s.path.write_bytes(QUEUE_HEADER + message)
    result = s.agent.deliver(s.path, len(QUEUE_HEADER), sender, rcpt)
    assert result.outcome is Outcome.SUCCESS, result


def test_spam_goes_to_junk_for_a_user_who_chose_it(setup: Setup) -> None:
    setup.directory.set_user("alice@example.com", junk_spam=True)
    alice = setup.home.maildir("example.com", "alice")
    deliver(setup, SPAM)
    deliver(setup, b"X-Spam-Flag: YES\nSubject: s\n\nb\n")
    deliver(setup, HAM)
    deliver(setup, b"Subject: s\n\nX-Spam-Flag: YES\n")  # in the body: no mark
    assert (alice / ".Junk" / "maildirfolder").exists()
    assert len(os.listdir(alice / ".Junk" / "new")) == 2
    assert len(os.listdir(alice / "new")) == 2
    # The spamd check's line is on top; a later (sender's) one does not count.
    deliver(setup, b"X-Spam-Status: No, score=0.0\nX-Spam-Status: Yes\n\nb\n")
    assert len(os.listdir(alice / "new")) == 3


def test_spam_stays_in_the_inbox_for_others(setup: Setup) -> None:
    deliver(setup, SPAM, "bob@example.com")
    bob = setup.home.maildir("example.com", "bob")
    assert len(os.listdir(bob / "new")) == 1
    assert not (bob / ".Junk").exists()


def test_junk_counts_against_the_quota(setup: Setup) -> None:
    setup.directory.set_user("alice@example.com", junk_spam=True, quota=400)
    alice = setup.home.maildir("example.com", "alice")
    big = SPAM + b"x" * 150 + b"\n"
    deliver(setup, big)
    setup.path.write_bytes(QUEUE_HEADER + big)
    result = setup.agent.deliver(setup.path, len(QUEUE_HEADER), "d@x.test", "alice@example.com")
    assert result.outcome is Outcome.PERMANENT  # over quota: .Junk is counted
    assert Quota(400, None).definition() in (alice / "maildirsize").read_text()
    assert len(os.listdir(alice / ".Junk" / "new")) == 1


def _replies(queue: QueueStore) -> list[tuple[str, tuple[str, ...], bytes]]:
    found = []
    for qid in queue.ids():
        entry = queue.load(qid)
        with open(entry.path, "rb") as stream:
            stream.seek(entry.body_offset)
            found.append((entry.envelope.sender, entry.envelope.recipients, stream.read()))
    return found


def test_vacation_answers_once_per_period(setup: Setup) -> None:
    setup.directory.set_vacation("alice@example.com", Vacation(True, "Away", "Back soon."))
    message = b"To: alice@example.com\nSubject: hi\nMessage-ID: <m1@x.test>\n\nhello\n"
    deliver(setup, message)
    [(sender, rcpts, data)] = _replies(setup.queue)
    assert (sender, rcpts) == ("", ("d@x.test",))
    assert data.startswith(b"Received: (qmail ")
    assert b"\nAuto-Submitted: auto-replied\n" in data and b"\nIn-Reply-To: <m1@x.test>\n" in data
    assert b"\nFrom: alice@example.com\n" in data
    deliver(setup, message)  # same sender, same period
    assert len(_replies(setup.queue)) == 1
    setup.clock.advance(7 * DAY)
    deliver(setup, message)
    assert len(_replies(setup.queue)) == 2
    state = (setup.home.maildir("example.com", "alice").parent / STATE_FILE).read_text()
    assert state == f"{int(setup.clock.time())} d@x.test\n"


def test_vacation_skips_junk_lists_and_null_senders(setup: Setup) -> None:
    setup.directory.set_user("alice@example.com", junk_spam=True)
    setup.directory.set_vacation("alice@example.com", Vacation(True, "Away", "Back soon."))
    deliver(setup, SPAM)
    deliver(setup, b"To: alice@example.com\nList-Id: <l.x.test>\n\nb\n")
    deliver(setup, b"To: alice@example.com\nPrecedence: bulk\n\nb\n")
    deliver(setup, b"To: alice@example.com\n\nb\n", sender="")
    assert _replies(setup.queue) == []
    setup.directory.vacation_off("alice@example.com")
    # A new agent: the running one's lookup cache sees the change within 50 ms.
    setup.agent = LocalAgent(
        setup.home, Controls(), setup.directory, fsync=False, queue=setup.queue
    )
    deliver(setup, b"To: alice@example.com\n\nb\n")
    assert _replies(setup.queue) == []
    stored = setup.directory.vacation("alice@example.com")
    assert stored is not None and not stored.enabled and stored.body == "Back soon."


def test_the_sender_log_is_bounded(tmp_path: Path) -> None:
    with opened(tmp_path) as log:
        for n in range(MAX_SENDERS + 5):
            log._seen[f"s{n}@x.test"] = 1000.0 + n
        log.record("new@x.test", 5000.0, 10_000)
    with opened(tmp_path) as log:
        assert log.last("NEW@x.test") == 5000.0
        assert log.last("s0@x.test") is None  # the oldest went
        assert log.last(f"s{MAX_SENDERS + 4}@x.test") is not None
        log.record("later@x.test", 30_000.0, 10_000)  # everything else expired
    assert (tmp_path / STATE_FILE).read_text() == "30000 later@x.test\n"
    (tmp_path / STATE_FILE).write_text("torn li\n5 ok@x.test\n")
    with opened(tmp_path) as log:
        assert log.last("ok@x.test") == 5.0
