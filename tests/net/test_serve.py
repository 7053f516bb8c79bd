"""net.serve: the idle sweep and the graceful stop with fake sessions (no socket), then the
whole serve() on a real loopback listener with signals sent to this process."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from typing import Any

import pytest
from tests.net.test_driver import Echo

from qtoaster.net import serve as serve_module
from qtoaster.net.serve import drain, serve, sweep


class FakeSession:
    def __init__(self, *, busy: bool = False, idle: bool = True, age: float = 0.0) -> None:
        self.busy = busy
        self.is_idle = idle
        self.last_activity = time.monotonic() - age
        self.events: list[str] = []
        self.timed_out_event = asyncio.Event()

    @property
    def idle(self) -> bool:
        return self.is_idle and not self.busy

    def idle_limit(self) -> float:
        return 10.0

    def timed_out(self) -> None:
        self.events.append("timed out")
        self.timed_out_event.set()

    def shut_down(self) -> None:
        self.events.append("shut down")


async def test_sweep_times_out_idle_sessions_only() -> None:
    old, busy_old, young = FakeSession(age=60), FakeSession(age=60, busy=True), FakeSession()
    task = asyncio.create_task(sweep([old, busy_old, young], 0))
    await old.timed_out_event.wait()
    task.cancel()
    assert busy_old.events == [] and young.events == []


async def test_drain_shuts_down_at_once_when_all_are_idle() -> None:
    sessions = [FakeSession(), FakeSession()]
    started = time.monotonic()
    await drain(sessions, grace=60.0, overtime=60.0)
    assert time.monotonic() - started < 30
    assert [s.events for s in sessions] == [["shut down"], ["shut down"]]


async def test_drain_waits_for_a_busy_session(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serve_module, "POLL_SECONDS", 0)
    busy = FakeSession(busy=True)
    loop = asyncio.get_running_loop()
    loop.call_soon(setattr, busy, "busy", False)
    await drain([busy], grace=60.0, overtime=0.0)
    assert busy.events == ["shut down"]


async def test_drain_gives_up_after_grace_and_overtime() -> None:
    stuck = FakeSession(busy=True)
    await drain([stuck], grace=0.0, overtime=0.0)
    assert stuck.events == ["shut down"]  # the session decides what busy means


def listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.setblocking(False)
    return sock


async def test_serve_on_loopback_with_signals() -> None:
    sessions: set[Any] = set()
    kinds: list[str] = []
    ready, reloaded = asyncio.Event(), asyncio.Event()

    def new_session(kind: str) -> Echo:
        kinds.append(kind)
        return Echo(sessions)

    async def background() -> None:
        await asyncio.Event().wait()

    sock = listening_socket()
    port = sock.getsockname()[1]
    served = asyncio.create_task(
        serve(
            [("echo", sock)],
            new_session,
            sessions,
            ready=ready.set,
            reload=reloaded.set,
            grace=lambda: 0.0,
            background=[background],
        )
    )
    await ready.wait()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"A\r\n")
    assert await reader.readline() == b"ok A\r\n"
    assert kinds == ["echo"] and len(sessions) == 1
    os.kill(os.getpid(), signal.SIGHUP)
    await reloaded.wait()
    os.kill(os.getpid(), signal.SIGTERM)
    await served  # returns: the session was shut down, the listener closed
    assert await reader.read() == b""  # the client sees the session end
    writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
