"""send/remoteclient.py with a real remote delivery process, and remote/link.py alone.

Loopback only: smtproutes sends far.test to an SmtpPeer (or to a tarpit that accepts and
never greets, to keep deliveries in flight).  Descriptors are counted in /proc/self/fd."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from tests.integration.harness import qt, reachable
from tests.smtppeer import SmtpPeer

from qtoaster.core.outcome import Outcome
from qtoaster.remote import child
from qtoaster.remote.body import Body
from qtoaster.remote.channel import Answer, Deliver, Message
from qtoaster.remote.link import Link
from qtoaster.send.remoteclient import DIED, RemoteClient

MESSAGE = b"ENVELOPE-BYTES-THE-CHILD-MUST-NOT-SEND\nSubject: t\n\nhello\n"
OFFSET = MESSAGE.index(b"Subject")


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _open_on(path: Path, pid: int | str = "self") -> int:
    """How many descriptors of process ``pid`` are open on ``path``."""
    found = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            found += os.readlink(f"/proc/{pid}/fd/{fd}") == str(path)
        except OSError:
            pass  # closed meanwhile (listdir's own descriptor)
    return found


def _files(pid: int | str = "self") -> int:
    """Descriptors that are not sockets (the peer's sockets live in this test process)."""
    names = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            names.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return sum(not name.startswith("socket:") for name in names)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("remoteclient") / "home"
    qt(home, "init", "--me", "mx.example.test", "--smtp", "127.0.0.1:0")
    reachable(home)  # under root the child drops to the remote user, who must read it
    return home


@pytest.fixture
def peer() -> Iterator[SmtpPeer]:
    with SmtpPeer("127.0.0.1") as started:  # its own loop and thread: started outside ours
        yield started


@pytest.fixture
def message(tmp_path: Path) -> Path:
    path = tmp_path / "queued"
    path.write_bytes(MESSAGE)
    return path


async def _deliver(client: RemoteClient, path: Path, rcpt: str) -> tuple[Outcome, str]:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        body = Body(fd, OFFSET, len(MESSAGE) - OFFSET)
        attempt = await client.deliver(body, "a@example.test", [rcpt], "far.test")
    finally:
        os.close(fd)
    assert attempt.reached
    (result,) = attempt.results
    return result.outcome, result.report


async def test_many_concurrent_deliveries_each_once_and_no_descriptor_leaks(
    home: Path, message: Path, peer: SmtpPeer
) -> None:
    count = 150
    (home / "control" / "smtproutes").write_text(f"far.test:127.0.0.1:{peer.port}\n")
    client = RemoteClient(home)
    await _deliver(client, message, "warm@far.test")  # the child is started
    pid = client.pid
    assert pid is not None and pid != os.getpid()
    before, child_before = _files(), _files(pid)
    limit = asyncio.Semaphore(60)

    async def one(i: int) -> tuple[Outcome, str]:
        async with limit:
            return await _deliver(client, message, f"r{i}@far.test")

    results = await asyncio.gather(*(one(i) for i in range(count)))
    assert all(outcome is Outcome.SUCCESS for outcome, _ in results)
    # Every descriptor passed was closed, here and in the child.
    assert _open_on(message) == 0 and _open_on(message, pid) == 0
    assert (_files(), _files(pid)) == (before, child_before)
    await client.close()
    assert not Path(f"/proc/{pid}").exists()  # stopped and reaped at close
    got = Counter(r for m in peer.messages for r in m.recipients)
    assert got == Counter([f"r{i}@far.test" for i in range(count)] + ["warm@far.test"])
    assert all(m.data == b"Subject: t\r\n\r\nhello\r\n" for m in peer.messages)


async def test_a_killed_child_defers_what_was_in_flight_and_is_started_again(
    home: Path, message: Path, peer: SmtpPeer
) -> None:
    tarpit = socket.create_server(("127.0.0.1", 0))
    tarpit.setblocking(False)
    (home / "control" / "smtproutes").write_text(f"far.test:127.0.0.1:{tarpit.getsockname()[1]}\n")
    client = RemoteClient(home)
    held: list[socket.socket] = []
    loop = asyncio.get_running_loop()
    try:
        flight = [
            asyncio.create_task(_deliver(client, message, f"t{i}@far.test")) for i in range(3)
        ]
        async with asyncio.timeout(30):
            while len(held) < 3:
                held.append((await loop.sock_accept(tarpit))[0])
        first = client.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        async with asyncio.timeout(30):
            results = await asyncio.gather(*flight)
        assert results == [(Outcome.TEMPORARY, DIED)] * 3
        (home / "control" / "smtproutes").write_text(f"far.test:127.0.0.1:{peer.port}\n")
        outcome, report = await _deliver(client, message, "later@far.test")
        assert outcome is Outcome.SUCCESS and "250 ok queued" in report
        assert client.pid not in (None, first)
        await client.close()
    finally:
        for conn in held:
            conn.close()
        tarpit.close()


async def test_link_passes_descriptors_in_frame_order_and_closes_each_once(
    tmp_path: Path,
) -> None:
    files = []
    for i in range(40):
        files.append(tmp_path / f"m{i}")
        files[-1].write_bytes(f"message {i}\n".encode() * (i + 1))
    before = _fds()
    a, b = socket.socketpair()
    received: list[tuple[Message, bytes]] = []
    done = asyncio.Event()

    def on_b(message: Message, fd: int | None) -> None:
        assert isinstance(message, Deliver) and fd is not None
        try:
            received.append((message, os.pread(fd, message.size, message.offset)))
        finally:
            os.close(fd)
        if len(received) == len(files):
            done.set()

    left = Link(a, lambda m, fd: None, lambda why: None, accept_fds=False)
    right = Link(b, on_b, lambda why: None, accept_fds=True)
    big = "x" * 200_000  # frames larger than the socket buffer: partial writes
    for i, path in enumerate(files):
        fd = os.open(path, os.O_RDONLY)
        left.send(Deliver(i, 0, path.stat().st_size, big, (), "far.test"), fd)
        os.close(fd)  # the link sends its own duplicate
    async with asyncio.timeout(30):
        await done.wait()
    assert [m.id for m, _ in received] == list(range(len(files)))
    assert all(data == files[m.id].read_bytes() for m, data in received)
    left.close()
    right.close()
    assert _fds() == before


async def test_a_peer_that_sends_descriptors_to_the_send_side_is_cut_off(tmp_path: Path) -> None:
    a, b = socket.socketpair()
    closed: list[str] = []
    link = Link(a, lambda m, fd: None, closed.append, accept_fds=False)
    fd = os.open(tmp_path, os.O_RDONLY)
    socket.send_fds(b, [b"\0\0\0\2{}"], [fd])
    os.close(fd)
    before = _fds()
    async with asyncio.timeout(10):
        while not closed:
            await asyncio.sleep(0.01)
    assert closed == ["the peer sent descriptors"]
    assert link.closed and _fds() == before - 1  # its socket, and the descriptor it got
    b.close()


class _Raising:
    """A remote agent with a bug."""

    def __init__(self) -> None:
        self.closed = False

    async def deliver(
        self,
        body: Body,
        sender: str,
        rcpts: Sequence[str],
        domain: str,
        requiretls: bool,
        smtputf8: bool,
        dsn: object = None,
        binarymime: bool = False,
    ) -> None:
        assert os.pread(body.fd, 7, body.offset) == b"Subject"
        raise RuntimeError("boom")

    async def close(self) -> None:
        self.closed = True


async def test_the_child_answers_a_raising_agent_with_a_deferral_and_closes_the_descriptor(
    message: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = _Raising()
    monkeypatch.setattr(child, "remote_agent", lambda config: agent)
    ours, theirs = socket.socketpair()
    before = _open_on(message)
    loop = asyncio.get_running_loop()
    try:
        serving = asyncio.create_task(child.serve_remote(None, theirs))  # type: ignore[arg-type]
        answers: list[Message] = []
        got = asyncio.Event()

        def on_answer(m: Message, fd: int | None) -> None:
            answers.append(m)
            got.set()

        link = Link(ours, on_answer, lambda why: None, accept_fds=False)
        fd = os.open(message, os.O_RDONLY)
        link.send(Deliver(9, OFFSET, len(MESSAGE) - OFFSET, "a@b", ("x@far", "y@far"), "far"), fd)
        os.close(fd)
        async with asyncio.timeout(10):
            await got.wait()
        (answer,) = answers
        assert isinstance(answer, Answer) and answer.id == 9 and answer.reached
        internal = "Internal error in remote delivery: boom. (#4.3.0)"
        assert [(r.outcome, r.report) for r in answer.results] == [
            (Outcome.TEMPORARY, internal)
        ] * 2
        link.close()  # end of the channel: the child closes its agent and returns
        async with asyncio.timeout(10):
            await serving
        assert agent.closed and _open_on(message) == before == 0
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        loop.remove_signal_handler(signal.SIGINT)
