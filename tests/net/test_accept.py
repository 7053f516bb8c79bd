"""net.accept and net.limits: counting, refusing over a limit, a worker's share, failed
accepts logged at most once a second (on a real loopback listener, in this process)."""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
from typing import Any

import pytest
from tests.net.test_driver import Echo

from qtoaster.net import accept as accept_module
from qtoaster.net.accept import Counts, RateLimitedLog
from qtoaster.net.limits import Limits, client_key, fit_connections, worker_share
from qtoaster.net.serve import serve


def refusal(kind: str, per_ip: bool) -> bytes:
    return b"421 per ip\r\n" if per_ip else b"421 total\r\n"


def test_counts_give_back_once() -> None:
    counts = Counts()
    limits = Limits(total=3, per_ip=2, refusal=refusal)
    first, _ = counts.take("10.0.0.1"), counts.take("10.0.0.1")
    assert counts.admits("10.0.0.1", limits) == "per_ip"
    assert counts.admits("10.0.0.2", limits) is None
    counts.take("10.0.0.2")
    assert counts.admits("10.0.0.3", limits) == "total"
    first()
    first()  # a second call changes nothing
    assert (counts.total, counts.by_ip) == (2, {"10.0.0.1": 1, "10.0.0.2": 1})


def test_client_key_counts_ipv6_per_64() -> None:
    assert client_key("192.0.2.7") == "192.0.2.7"
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"  # IPv4-mapped: the IPv4 client
    assert client_key("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert client_key("2001:DB8:1:2::ffff") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert client_key("local") == "local"  # a Unix socket's peer
    assert client_key("not:an:address") == "not:an:address"


def test_ipv6_clients_of_one_64_share_max_per_ip() -> None:
    """A host picks any address in its /64 (RFC 4291 2.5.4): that costs it no extra slots."""
    counts = Counts()
    exempted: list[str] = []

    def exempt(ip: str) -> bool:
        exempted.append(ip)
        return False

    limits = Limits(total=10, per_ip=2, refusal=refusal, exempt=exempt)
    gone = counts.take("2001:db8:0:1::a")
    counts.take("2001:db8:0:1::b")
    assert counts.admits("2001:db8:0:1::c", limits) == "per_ip"
    assert exempted == ["2001:db8:0:1::c"]  # the exemption sees the client's own address
    assert counts.admits("2001:db8:0:2::a", limits) is None  # the next /64 is another client
    gone()
    assert counts.admits("2001:db8:0:1::c", limits) is None
    assert counts.by_ip == {"2001:db8:0:1::/64": 1}


def test_worker_share_rounds_up() -> None:
    assert [worker_share(10, n) for n in (1, 3, 4, 20)] == [10, 4, 3, 1]


def test_fit_connections_within_the_hard_limit(caplog: pytest.LogCaptureFixture) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    log = logging.getLogger("test.limits")
    assert fit_connections(10, 1, log) == 10  # fits: nothing said
    assert not caplog.records
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard open-file limit")
    share = fit_connections(hard, 1, log)  # needs 2 * hard + 64 files: cannot be
    assert share == (hard - 64) // 2
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    [line] = caplog.records
    assert f"is {hard}, below the {2 * hard + 64}" in line.getMessage()
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_rate_limited_log_counts_what_it_leaves_out(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "qtoaster.net")
    say = RateLimitedLog(logging.ERROR, every=3600)
    for _ in range(5):
        say("failed %s", "x")
    assert [r.getMessage() for r in caplog.records] == ["failed x"]
    say.last = -float("inf")
    say("failed %s", "y")
    assert caplog.records[-1].getMessage() == "failed y (4 more since the last such line)"


async def _serving(limits: Limits | None) -> tuple[asyncio.Task[None], int, asyncio.Event]:
    sessions: set[Any] = set()
    ready, stop = asyncio.Event(), asyncio.Event()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    task = asyncio.create_task(
        serve(
            [("echo", sock)],
            lambda kind: Echo(sessions),
            sessions,
            ready=ready.set,
            reload=lambda: None,
            grace=lambda: 0.0,
            stop=stop,
            limits=lambda: limits,
        )
    )
    await ready.wait()
    return task, sock.getsockname()[1], stop


async def _echo(port: int, source: str = "127.0.0.1") -> bytes:
    """A whole dialog, until the server closes (its count is given back by then)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(b"A\r\nQUIT\r\n")
    answer = await reader.read()
    writer.close()
    return answer


async def test_over_a_limit_is_refused_and_closed() -> None:
    task, port, stop = await _serving(Limits(total=2, per_ip=1, refusal=refusal))
    held = await asyncio.open_connection("127.0.0.1", port)
    assert await _echo(port) == b"421 per ip\r\n"
    assert await _echo(port, "127.0.0.2") == b"ok A\r\nbye\r\n"  # its slot is given back at close
    other = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.3", 0))
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.4", 0))
    assert await reader.read() == b"421 total\r\n"  # then EOF: closed
    writer.close()
    for _, w in (held, other):
        w.close()
    stop.set()
    await task


async def test_failed_accepts_pause_and_are_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(accept_module, "RETRY_SECONDS", 0.01)
    failures = [5]
    real_accept = socket.socket.accept

    def accept(self: socket.socket) -> Any:
        if failures[0]:
            failures[0] -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        return real_accept(self)

    monkeypatch.setattr(socket.socket, "accept", accept)
    task, port, stop = await _serving(None)
    assert await _echo(port) == b"ok A\r\nbye\r\n"  # served once the failures are over
    assert failures == [0]
    lines = [r.getMessage() for r in caplog.records if "accept failed" in r.getMessage()]
    assert lines == ["echo accept failed: [Errno 24] Too many open files; accepting again shortly"]
    stop.set()
    await task
