"""mailboxd/fsserver.py with broker/fsclient.py: imapd's file requests, with a real auth
role issuing the tickets and the broker's imap listener in its own thread.

A ticket opens once; every MailFs operation works inside the Maildir and nothing outside
it can be reached (``..``, absolute paths, a planted symbolic link); a watch is answered
by a new message within a second, cancelled by the next request, or times out; 1,000 idle
connections cost bounded memory; started as root, only imapd's uid is served."""

from __future__ import annotations

import asyncio
import errno
import os
import resource
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from qtoaster.auth.client import AuthClient
from qtoaster.auth.protocol import VerifyResponse
from qtoaster.auth.protocol import socket_path as auth_socket_path
from qtoaster.authd.server import AuthServer
from qtoaster.broker.fsclient import BrokerFs, BrokerFsError
from qtoaster.broker.fsproto import FsRequest, decode_answer, encode_request, socket_path
from qtoaster.cli.newhome import init_home
from qtoaster.core.home import Home
from qtoaster.directory.store import Directory
from qtoaster.mailboxd.fsserver import FsServer
from qtoaster.maildir.storeapi import QuotaUsage

MESSAGE = b"Subject: one\n\nbody\n"


class Setup:
    def __init__(self, auth: AuthServer, server: FsServer, home: Home, maildir: Path) -> None:
        self.auth, self.server, self.home, self.maildir = auth, server, home, maildir
        self.path = socket_path(home)

    def ticket(self) -> str:
        return self.auth.issue("alice@example.test", str(self.maildir))

    async def open(self) -> BrokerFs:
        return await asyncio.to_thread(BrokerFs.open, self.path, self.ticket(), 10.0)


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    home = Home(tmp_path / "home")
    init_home(home, "mx.example.test", smtp=["127.0.0.1:0"], pop3=["127.0.0.1:0"])
    maildir = home.domains / "example.test" / "alice" / "Maildir"
    for sub in ("cur", "new", "tmp", ".Sent/cur", ".Sent/new", ".Sent/tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "new" / "1700000001.M1P1Q1.host").write_bytes(MESSAGE)
    auth = AuthServer(home)
    await auth.start()
    server = FsServer(home, "mx.example.test", None, root=False)
    server.start()
    yield Setup(auth, server, home, maildir)
    server.close()
    await auth.close()


async def test_a_ticket_opens_once(setup: Setup) -> None:
    ticket = setup.ticket()
    fs = await asyncio.to_thread(BrokerFs.open, setup.path, ticket, 10.0)
    assert fs.maildir == str(setup.maildir)
    fs.close()
    with pytest.raises(BrokerFsError) as used:
        await asyncio.to_thread(BrokerFs.open, setup.path, ticket, 10.0)
    assert used.value.answer is not None and used.value.answer.error == "ticket"
    with pytest.raises(BrokerFsError) as forged:
        await asyncio.to_thread(BrokerFs.open, setup.path, "0" * 32, 10.0)
    assert forged.value.answer is not None and forged.value.answer.error == "ticket"


def _operations(fs: BrokerFs, maildir: Path) -> None:
    assert fs.listdir("new") == ["1700000001.M1P1Q1.host"]
    assert sorted(fs.listdir("")) == [".Sent", "cur", "new", "tmp"]
    size, mtime = fs.stat("new/1700000001.M1P1Q1.host")
    assert size == len(MESSAGE) and mtime > 0
    with fs.open_read("new/1700000001.M1P1Q1.host") as stream:
        assert stream.read() == MESSAGE
    many = fs.open_many(["new/1700000001.M1P1Q1.host", "new/gone", "new/1700000001.M1P1Q1.host"])
    assert [None if f is None else f.read() for f in many] == [MESSAGE, None, MESSAGE]
    for f in many:
        if f is not None:
            f.close()
    assert fs.read_file("dovecot-uidlist", 100) is None
    probe = fs.stat_many(["new/1700000001.M1P1Q1.host", "new/gone", "cur"])
    assert probe[0] == (size, mtime) and probe[1] is None and probe[2] == fs.stat("cur")
    files, stats = fs.open_probe(["new/gone", "new/1700000001.M1P1Q1.host"], ["cur", "x"])
    assert files[0] is None and files[1] is not None and files[1].read() == MESSAGE
    assert stats == [fs.stat("cur"), None]
    files[1].close()
    fs.write_atomic("dovecot-uidlist", b"3 V1 N2\n")
    assert fs.read_file("dovecot-uidlist", 100) == b"3 V1 N2\n"
    with pytest.raises(OSError) as big:
        fs.read_file("dovecot-uidlist", 3)
    assert big.value.errno == errno.EFBIG
    fs.append_file("log", b"a\n")
    fs.append_file("log", b"b\n")
    assert (maildir / "log").read_bytes() == b"a\nb\n"
    assert fs.rename_many(
        [("new/1700000001.M1P1Q1.host", "cur/1700000001.M1P1Q1.host:2,S"), ("new/x", "cur/x")]
    ) == [None, "ENOENT"]
    fs.mkdir(".Drafts")
    with pytest.raises(FileExistsError):
        fs.mkdir(".Drafts")
    fs.rename_folder(".Drafts", ".Old")
    fs.mkdir(".Old/cur")
    (maildir / ".Old" / "cur" / "m").write_bytes(b"x")
    fs.remove_folder(".Old")
    assert not (maildir / ".Old").exists()
    name = fs.deliver(".Sent", b"Subject: sent\n\n", "S", 1_600_000_000.0)
    assert name.endswith(",S=15,W=17:2,S")
    sent = maildir / ".Sent" / "cur" / name
    assert sent.read_bytes() == b"Subject: sent\n\n" and sent.stat().st_mtime == 1_600_000_000
    assert os.listdir(maildir / ".Sent" / "tmp") == []
    copy = fs.link_copy("cur/1700000001.M1P1Q1.host:2,S", "", "S")
    assert (maildir / "cur" / copy).read_bytes() == MESSAGE
    assert fs.unlink_many([f"cur/{copy}", "cur/nothing"]) == [None, "ENOENT"]
    fd = fs.lock("dovecot-uidlist.lock")
    try:
        assert os.fstat(fd).st_size == 0
    finally:
        os.close(fd)
    assert fs.quota() == QuotaUsage(0, None, 0, None)
    with pytest.raises(FileNotFoundError):
        fs.stat("cur/nothing")
    with pytest.raises(FileNotFoundError):
        fs.open_read("cur/nothing")


async def test_every_operation(setup: Setup) -> None:
    fs = await setup.open()
    try:
        await asyncio.to_thread(_operations, fs, setup.maildir)
    finally:
        fs.close()


def _escapes(fs: BrokerFs, maildir: Path, outside: Path) -> None:
    for rel in ("../../secret", "/etc/passwd", "cur/../../x", "", "a//b", "./cur", "a\0b"):
        with pytest.raises(PermissionError):
            fs.stat(rel)
    (maildir / "cur" / "link").symlink_to(outside / "secret")
    (maildir / ".Evil").symlink_to(outside, target_is_directory=True)
    with pytest.raises(OSError) as link:
        fs.open_read("cur/link")
    assert link.value.errno == errno.ELOOP
    with pytest.raises(OSError) as through:
        fs.read_file(".Evil/secret", 100)
    assert through.value.errno in (errno.ELOOP, errno.ENOTDIR)
    with pytest.raises(OSError):
        fs.listdir(".Evil")
    with pytest.raises(OSError):
        fs.write_atomic(".Evil/planted", b"x")
    with pytest.raises(OSError):
        fs.deliver(".Evil", b"x", "", None)
    fs.remove_folder(".Sent")  # a folder holding a link: the link goes, not its target
    (maildir / ".Sent").mkdir()
    (maildir / ".Sent" / "escape").symlink_to(outside, target_is_directory=True)
    fs.remove_folder(".Sent")
    assert (outside / "secret").read_bytes() == b"secret"
    assert fs.unlink_many(["cur/link"]) == [None]  # the link itself, inside: fine
    assert (outside / "secret").exists()


async def test_paths_that_escape_are_refused(setup: Setup, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    fs = await setup.open()
    try:
        await asyncio.to_thread(_escapes, fs, setup.maildir, outside)
    finally:
        fs.close()
    assert sorted(os.listdir(outside)) == ["secret"]


async def _watching(setup: Setup, count: int) -> None:
    """Until ``count`` watches are in place at the broker (a deadline, no sleep-and-hope)."""
    deadline = asyncio.get_running_loop().time() + 10
    while setup.server.watching != count:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)


async def test_a_watch_is_answered_by_a_new_message(setup: Setup) -> None:
    fs = await setup.open()
    watcher = fs.watcher()
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        waiting = asyncio.create_task(watcher.wait(["new", "cur"], 30.0))
        await _watching(setup, 1)
        assert not waiting.done()
        (setup.maildir / "new" / "1700000002.M1P1Q2.host").write_bytes(MESSAGE)
        assert await asyncio.wait_for(waiting, 5.0) is True
        assert loop.time() - start < 1.5
        # the connection goes on serving after the watch
        names = await asyncio.to_thread(fs.listdir, "new")
        assert "1700000002.M1P1Q2.host" in names
        assert await watcher.wait(["new"], 0.1) is False  # nothing changed: its timeout
    finally:
        fs.close()


async def test_a_watch_is_cancelled_by_the_next_request(setup: Setup) -> None:
    fs = await setup.open()
    watcher = fs.watcher()
    try:
        waiting = asyncio.create_task(watcher.wait(["new"], 30.0))
        await _watching(setup, 1)
        waiting.cancel()  # IDLE's DONE
        with pytest.raises(asyncio.CancelledError):
            await waiting
        # the next request: the broker answers the watch (changed false) first, dropped here
        assert await asyncio.wait_for(asyncio.to_thread(fs.listdir, "cur"), 5.0) == []
        # and a blocking call made while a wait is pending hands the wait its answer
        waiting = asyncio.create_task(watcher.wait(["new"], 30.0))
        await _watching(setup, 1)
        assert await asyncio.wait_for(asyncio.to_thread(fs.listdir, "cur"), 5.0) == []
        assert await asyncio.wait_for(waiting, 5.0) is False
    finally:
        fs.close()


def _raw(path: Path, lines: list[bytes]) -> list[bytes]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(os.fspath(path))
        answers = []
        for line in lines:
            sock.sendall(line)
            answers.append(sock.makefile("rb").readline())
        return answers


async def test_requests_before_open_and_bad_lines_close_the_connection(setup: Setup) -> None:
    before = await asyncio.to_thread(
        _raw, setup.path, [encode_request(FsRequest(5, "listdir", path="new"))]
    )
    answer = decode_answer(before[0])
    assert (answer.id, answer.ok, answer.error) == (5, False, "bad")
    bad = await asyncio.to_thread(_raw, setup.path, [b"{nonsense\n"])
    assert decode_answer(bad[0]).error == "bad"


async def test_root_serves_only_imapd(tmp_path: Path) -> None:
    """Started as root with imapd's uid known: a peer of another uid (here this test's)
    is denied and disconnected before its ticket is looked at."""
    home = Home(tmp_path / "home")
    init_home(home, "mx.example.test", smtp=["127.0.0.1:0"], pop3=["127.0.0.1:0"])
    server = FsServer(home, "mx.example.test", os.getuid() + 4242, root=True)
    server.start()
    try:
        with pytest.raises(BrokerFsError) as denied:
            await asyncio.to_thread(BrokerFs.open, socket_path(home), "0" * 32, 10.0)
        assert denied.value.answer is not None and denied.value.answer.error == "denied"
        assert server.allowed(os.getuid() + 4242) and not server.allowed(os.getuid())
        assert not server.allowed(None)
    finally:
        server.close()


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def test_a_thousand_idle_connections(setup: Setup) -> None:
    """1,000 opened sessions, each with a pending watch on the same Maildir, held by one
    broker: no thread each (the pool stays bounded), bounded memory, and one new
    message wakes them all."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if min(hard, 1 << 16) < 5000:
        pytest.skip("not enough descriptors for 1,000 connections")
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 1 << 16), hard))
    count = 1000
    fss: list[BrokerFs] = []
    try:
        rss_before = _rss_kib()
        for _ in range(count):
            fss.append(await setup.open())
        waits = [asyncio.create_task(fs.watcher().wait(["new", "cur"], 60.0)) for fs in fss]
        deadline = asyncio.get_running_loop().time() + 30
        while setup.server.watching < count:  # every watch in place at the broker
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        rss_after = _rss_kib()
        per_session = (rss_after - rss_before) / count
        print(f"RSS {rss_before} KiB -> {rss_after} KiB: {per_session:.1f} KiB per session")
        # both sides live in this process: client, broker, sockets and tasks together
        assert per_session < 100
        assert len(setup.server.sessions) == count
        (setup.maildir / "new" / "1700000003.M1P1Q3.host").write_bytes(MESSAGE)
        results = await asyncio.wait_for(asyncio.gather(*waits), 30.0)
        assert all(results)
    finally:
        for fs in fss:
            fs.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_an_imap_login_gets_a_ticket_the_broker_opens(tmp_path: Path) -> None:
    """The auth role answers a successful imap verify with a ticket (as for pop3), a
    failed one or an smtp one without; the broker opens the user's Maildir with it."""
    home = Home(tmp_path / "home")
    init_home(home, "mx.example.test", smtp=["127.0.0.1:0"], pop3=["127.0.0.1:0"])
    directory = Directory.open(home)
    try:
        directory.add_domain("example.test")
        directory.add_user("bob@example.test", "bobs secret")
        maildir = directory.user("bob@example.test")
        assert maildir is not None
    finally:
        directory.close()
    auth = AuthServer(home)
    await auth.start()
    server = FsServer(home, "mx.example.test", None, root=False)
    server.start()
    client = AuthClient(auth_socket_path(home))
    try:

        async def login(service: str, secret: str) -> VerifyResponse:
            return await client.verify(
                service=service,
                mechanism="PLAIN",
                user="bob@example.test",
                secret=secret,
                ip="192.0.2.9",
            )

        assert (await login("smtp", "bobs secret")).ticket == ""
        wrong = await login("imap", "wrong")
        assert not wrong.ok and wrong.ticket == ""
        assert auth.throttle.failures("192.0.2.9") == 1  # counted with the others
        good = await login("imap", "bobs secret")
        assert good.ok and len(good.ticket) == 32
        fs = await asyncio.to_thread(BrokerFs.open, socket_path(home), good.ticket, 10.0)
        try:
            assert fs.maildir == str(maildir.maildir)
            assert sorted(await asyncio.to_thread(fs.listdir, "")) == ["cur", "new", "tmp"]
        finally:
            fs.close()
    finally:
        await client.close()
        server.close()
        await auth.close()
