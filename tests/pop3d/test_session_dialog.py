"""A whole POP3 session in process: USER/PASS against a real home's directory (through an
auth role in the same loop), LIST, RETR, DELE, QUIT, driven through a recording transport
(no client socket), as pop3d's worker builds it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest

from qtoaster.authd.server import AuthServer
from qtoaster.cli.newhome import init_home
from qtoaster.core.home import Home
from qtoaster.directory.store import Directory
from qtoaster.mailboxd.server import Broker
from qtoaster.pop3d.session import Pop3Session
from qtoaster.pop3d.worker import Pop3Worker

MESSAGE = b"Subject: hi\n\n.dot\nbody\n"


class Transport:
    def __init__(self) -> None:
        self.data = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("::ffff:192.0.2.7", 40000) if name == "peername" else default

    def take(self) -> bytes:
        data, self.data = self.data, b""
        return data


@pytest.fixture
async def worker(tmp_path: Path) -> AsyncIterator[Pop3Worker]:
    home = Home(tmp_path / "home")
    init_home(home, "mx.example.test", smtp=["127.0.0.1:0"], pop3=["127.0.0.1:0"])
    settings = home.settings_file.read_text()
    home.settings_file.write_text(
        settings.replace("allow_plaintext = false", "allow_plaintext = true").replace(
            "failure_delay = 1.0", "failure_delay = 0.1"
        )
    )
    directory = Directory.open(home)
    directory.add_domain("example.test")
    directory.add_user("alice@example.test", "secret")
    maildir = directory.user("alice@example.test")
    directory.close()
    assert maildir is not None
    (maildir.maildir / "new" / "1700000001.M1P1Q1.host").write_bytes(MESSAGE)
    auth = AuthServer(home)  # logins are checked by the auth role (decision 0007)
    await auth.start()
    broker = Broker(home)  # pop3d reaches the Maildir through the mailbox broker
    broker.start()
    worker = Pop3Worker(home)
    yield worker
    await worker.auth.close()
    worker.executor.shutdown(wait=True)
    worker.directory.close()
    await auth.close()
    broker.close()


async def answer(session: Pop3Session, transport: Transport, data: bytes) -> bytes:
    session.data_received(data)
    while session.busy:  # a login or QUIT's update runs in a thread
        assert session.task is not None
        await session.task
    return transport.take()


async def test_login_list_retr_dele_quit(worker: Pop3Worker) -> None:
    session = worker.new_session("pop3")
    transport = Transport()
    session.connection_made(cast(asyncio.BaseTransport, transport))
    assert session.remote_ip == "192.0.2.7" and worker.sessions == {session}
    greeting = transport.take()
    assert greeting.startswith(b"+OK <") and greeting.endswith(b"@mx.example.test>\r\n")

    login = await answer(session, transport, b"USER alice@example.test\r\nPASS secret\r\n")
    assert login == b"+OK \r\n+OK \r\n"
    assert session.user == "alice@example.test" and session.lock is not None

    size = len(MESSAGE) + MESSAGE.count(b"\n")  # octets with CRLF line ends
    got = await answer(session, transport, b"STAT\r\nLIST\r\nRETR 1\r\n")
    assert got == (
        b"+OK 1 %d\r\n+OK \r\n1 %d\r\n.\r\n" % (size, size)
        + b"+OK \r\nSubject: hi\r\n\r\n..dot\r\nbody\r\n.\r\n"
    )

    got = await answer(session, transport, b"DELE 1\r\nQUIT\r\n")
    assert got == b"+OK \r\n+OK \r\n" and transport.closed
    assert session.lock is None  # released at UPDATE
    session.connection_lost(None)
    assert worker.sessions == set()
    assert session.mailbox is not None
    assert list((session.mailbox.maildir / "new").iterdir()) == []
    assert list((session.mailbox.maildir / "cur").iterdir()) == []


async def test_wrong_password_then_drop_leaves_the_mailbox_alone(worker: Pop3Worker) -> None:
    session = worker.new_session("pop3")
    transport = Transport()
    session.connection_made(cast(asyncio.BaseTransport, transport))
    transport.take()
    got = await answer(session, transport, b"USER alice@example.test\r\nPASS nope\r\n")
    assert got == b"+OK \r\n-ERR [AUTH] authorization failed\r\n"
    assert session.mailbox is None and not transport.closed
    session.connection_lost(None)
    assert worker.sessions == set()
