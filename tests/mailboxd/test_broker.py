"""qtoaster.mailboxd: the broker in process, with a real auth role issuing the tickets.

OPEN needs a ticket the auth role issued (single use, 60 s); one session per mailbox;
a connection dropped without COMMIT changes nothing; COMMIT deletes exactly the marked
messages; QUOTA reads only Maildirs of the home; who may ask what (started as root)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from qtoaster.authd.server import AuthServer
from qtoaster.broker.client import BrokerConnection, BrokerError, open_mailbox
from qtoaster.broker.protocol import (
    CommitRequest,
    FetchRequest,
    OpenRequest,
    QuotaRequest,
    socket_path,
)
from qtoaster.cli.newhome import init_home
from qtoaster.core.home import Home
from qtoaster.mailboxd.server import Broker, Peers

MESSAGES = [b"Subject: one\n\nbody\n", b"Subject: two\n\nbody two\n"]


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[AuthServer, Path, Path]]:
    home = Home(tmp_path / "home")
    init_home(home, "mx.example.test", smtp=["127.0.0.1:0"], pop3=["127.0.0.1:0"])
    maildir = home.domains / "example.test" / "alice" / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    for n, body in enumerate(MESSAGES, start=1):
        (maildir / "new" / f"170000000{n}.M1P1Q{n}.host").write_bytes(body)
    auth = AuthServer(home)
    await auth.start()
    broker = Broker(home)
    broker.start()
    yield auth, socket_path(home), maildir
    broker.close()
    await auth.close()


async def _open(path: Path, ticket: str):  # type: ignore[no-untyped-def]
    return await asyncio.to_thread(open_mailbox, path, ticket)


async def test_ticket_opens_once_and_fetch_passes_a_descriptor(
    setup: tuple[AuthServer, Path, Path],
) -> None:
    auth, path, maildir = setup
    ticket = auth.issue("alice@example.test", str(maildir))
    box = await _open(path, ticket)
    try:
        assert box.stat() == (2, sum(len(m) + m.count(b"\n") for m in MESSAGES))
        assert box.read_small(2, 65536) == MESSAGES[1]
        with box.open_message(1) as stream:
            assert stream.read() == MESSAGES[0]
    finally:
        box.connection.release()
    with pytest.raises(BrokerError) as used:
        await _open(path, ticket)
    assert used.value.answer is not None and used.value.answer.error == "ticket"


async def test_forged_and_expired_tickets_are_refused(setup: tuple[AuthServer, Path, Path]) -> None:
    auth, path, maildir = setup
    with pytest.raises(BrokerError) as forged:
        await _open(path, "0" * 32)
    assert forged.value.answer is not None and forged.value.answer.error == "ticket"
    ticket = auth.issue("alice@example.test", str(maildir))
    address, where, _deadline = auth.tickets[ticket]
    auth.tickets[ticket] = (address, where, 0.0)  # its 60 seconds are over
    with pytest.raises(BrokerError) as expired:
        await _open(path, ticket)
    assert expired.value.answer is not None and expired.value.answer.error == "ticket"


async def test_one_session_per_mailbox_and_a_drop_changes_nothing(
    setup: tuple[AuthServer, Path, Path],
) -> None:
    auth, path, maildir = setup
    before = sorted(p.name for p in (maildir / "new").iterdir())
    first = await _open(path, auth.issue("alice@example.test", str(maildir)))
    first.delete(1)
    with pytest.raises(BrokerError) as busy:
        await _open(path, auth.issue("alice@example.test", str(maildir)))
    assert busy.value.answer is not None and busy.value.answer.error == "in-use"
    assert busy.value.answer.text == "your mailbox is in use by another session"
    first.connection.release()  # dropped without COMMIT
    second = await _open(path, auth.issue("alice@example.test", str(maildir)))
    assert sorted(p.name for p in (maildir / "new").iterdir()) == before
    second.delete(1)
    assert await asyncio.to_thread(second.commit) == []
    second.connection.release()
    assert list((maildir / "new").iterdir()) == []
    assert [p.name for p in (maildir / "cur").iterdir()] == [before[1] + ":2,"]


async def test_requests_before_open_and_foreign_maildirs_are_refused(
    setup: tuple[AuthServer, Path, Path], tmp_path: Path
) -> None:
    _, path, maildir = setup

    def ask(request: object) -> str:
        connection = BrokerConnection(path)
        try:
            answer, _fd = connection.ask(request)  # type: ignore[arg-type]
        finally:
            connection.release()
        return answer.error or "ok"

    assert await asyncio.to_thread(ask, FetchRequest(1)) == "bad"
    assert await asyncio.to_thread(ask, CommitRequest((1,))) == "bad"
    assert await asyncio.to_thread(ask, QuotaRequest(str(maildir), 10, None)) == "ok"
    assert await asyncio.to_thread(ask, QuotaRequest(str(tmp_path), 10, None)) == "denied"
    assert await asyncio.to_thread(ask, QuotaRequest(f"{maildir}/../../..", 10, None)) == "denied"


def test_peers_started_as_root() -> None:
    peers = Peers(pop3d=101, smtpd=102)
    ticket = OpenRequest("0" * 32)
    quota = QuotaRequest("/m", None, None)
    assert peers.may(101, ticket) and peers.may(101, FetchRequest(1))
    assert not peers.may(102, ticket) and not peers.may(101, quota)
    assert peers.may(102, quota) and not peers.may(None, quota) and not peers.may(0, ticket)
    assert Peers().may(5, ticket) and Peers().may(5, quota)  # not root: one uid
