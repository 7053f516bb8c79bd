"""Local delivery and SRS: forwarded senders rewritten, SRS bounces sent on (docs/srs.md)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from qtoaster.config.mailsettings import SrsSettings
from qtoaster.core.errors import TemporaryFailure
from qtoaster.core.home import Home
from qtoaster.core.outcome import Outcome, Result
from qtoaster.delivery.local import LocalAgent
from qtoaster.directory.store import Directory, create_directory
from qtoaster.mailauth.srs import KeyRing, LocalSrs, Srs, SrsService, key_path, write_keys
from qtoaster.queue.store import QueueStore

MESSAGE = b"Subject: hi\n\nhello\n"
OFFSET = 4


@dataclass(frozen=True)
class Controls:
    me: str = "mx.example.com"
    locals: frozenset[str] = frozenset({"mx.example.com", "localhost"})
    defaultdomain: str = "example.com"


class Away:
    """An SrsService whose holder cannot be reached (the auth role restarting)."""

    def forward(self, sender: str, domain: str) -> str:
        raise TemporaryFailure("auth role unavailable")

    def reverse(self, address: str) -> str:
        raise TemporaryFailure("auth role unavailable")


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    home = Home(tmp_path / "home")
    create_directory(home)
    write_keys(key_path(home), ["k1"])
    directory = Directory.open(home)
    directory.add_domain("example.com")
    directory.add_user("alice@example.com", None)
    directory.add_alias("info@example.com", ["friend@remote.test"])
    directory.close()
    yield home


@pytest.fixture
def queue(tmp_path: Path) -> QueueStore:
    QueueStore.create(tmp_path / "queue")
    return QueueStore(tmp_path / "queue", fsync=False)


def _agent(
    home: Home, queue: QueueStore, srs: SrsService | None = None, **settings: Any
) -> LocalAgent:
    directory = Directory.open(home)
    service = srs if srs is not None else LocalSrs(KeyRing(key_path(home)))
    return LocalAgent(
        home,
        Controls(),
        directory,
        fsync=False,
        queue=queue,
        srs=service,
        srs_settings=SrsSettings(**settings),
    )


def _deliver(agent: LocalAgent, tmp_path: Path, sender: str, recipient: str) -> Result:
    path = tmp_path / "msg"
    path.write_bytes(b"xxx\n" + MESSAGE)
    return agent.deliver(path, OFFSET, sender, recipient)


def _queued_sender(queue: QueueStore) -> tuple[str, tuple[str, ...]]:
    [qid] = queue.ids()
    envelope = queue.load(qid).envelope
    return envelope.sender, envelope.recipients


def test_forward_sender_is_rewritten_at_the_recipients_domain(
    home: Home, queue: QueueStore, tmp_path: Path
) -> None:
    result = _deliver(_agent(home, queue), tmp_path, "bob@sender.test", "info@example.com")
    assert result.outcome is Outcome.SUCCESS
    sender, recipients = _queued_sender(queue)
    assert recipients == ("friend@remote.test",)
    assert sender.startswith("SRS0=") and sender.endswith("=sender.test=bob@example.com")
    assert Srs((b"k1",)).reverse(sender) == "bob@sender.test"


def test_srs_domain_setting(home: Home, queue: QueueStore, tmp_path: Path) -> None:
    agent = _agent(home, queue, domain="srs.example.com")
    _deliver(agent, tmp_path, "bob@sender.test", "info@example.com")
    assert _queued_sender(queue)[0].endswith("@srs.example.com")


@pytest.mark.parametrize("sender", ["", "#@[]", "carol@example.com", "root@localhost", "root"])
def test_senders_kept(home: Home, queue: QueueStore, tmp_path: Path, sender: str) -> None:
    _deliver(_agent(home, queue), tmp_path, sender, "info@example.com")
    assert _queued_sender(queue)[0] == sender


def test_disabled_keeps_the_sender(home: Home, queue: QueueStore, tmp_path: Path) -> None:
    _deliver(_agent(home, queue, enabled=False), tmp_path, "bob@sender.test", "info@example.com")
    assert _queued_sender(queue)[0] == "bob@sender.test"


def test_dotqmail_forward_is_rewritten(home: Home, queue: QueueStore, tmp_path: Path) -> None:
    dotqmail = home.maildir("example.com", "alice").parent / ".qmail"
    dotqmail.write_text("&friend@remote.test\n")
    os.chmod(dotqmail, 0o600)
    _deliver(_agent(home, queue), tmp_path, "bob@sender.test", "alice@example.com")
    assert _queued_sender(queue)[0].startswith("SRS0=")


def test_unreachable_rewriter_defers_and_queues_nothing(
    home: Home, queue: QueueStore, tmp_path: Path
) -> None:
    result = _deliver(_agent(home, queue, Away()), tmp_path, "bob@sender.test", "info@example.com")
    assert result.outcome is Outcome.TEMPORARY
    assert "auth role unavailable" in result.report
    assert queue.ids() == []


def test_srs_bounce_goes_on_to_the_original_sender(
    home: Home, queue: QueueStore, tmp_path: Path
) -> None:
    address = Srs((b"k1",)).forward("bob@sender.test", "example.com")
    result = _deliver(_agent(home, queue), tmp_path, "", address)
    assert result.outcome is Outcome.SUCCESS
    assert _queued_sender(queue) == ("", ("bob@sender.test",))


def test_forged_srs_address_bounces(home: Home, queue: QueueStore, tmp_path: Path) -> None:
    address = Srs((b"not ours",)).forward("bob@sender.test", "example.com")
    result = _deliver(_agent(home, queue), tmp_path, "", address)
    assert result.outcome is Outcome.PERMANENT
    assert result.report == "Sorry, invalid SRS address (bad SRS hash). (#5.1.1)"
    assert queue.ids() == []


def test_srs_bounce_while_the_rewriter_is_away_is_deferred(
    home: Home, queue: QueueStore, tmp_path: Path
) -> None:
    address = Srs((b"k1",)).forward("bob@sender.test", "example.com")
    result = _deliver(_agent(home, queue, Away()), tmp_path, "", address)
    assert result.outcome is Outcome.TEMPORARY
