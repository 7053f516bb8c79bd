"""EngineDriver with a toy line engine: batching, waiting steps, flow control, errors, EOF.

Most tests drive it through a recording transport (no socket); the last one serves it on a
real loopback socket.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar, cast

import pytest

from qtoaster.net.driver import EngineDriver, plain_ip

NEED = object()


class LineEngine:
    """Lines in, the line as the event; answers queued by the driver; QUIT closes."""

    def __init__(self) -> None:
        self.closed = False
        self.eof = False
        self._in = b""
        self._out: list[bytes] = []

    @property
    def buffered(self) -> int:
        return len(self._in)

    def receive_data(self, data: bytes) -> None:
        if not data:
            self.eof = True
        self._in += data

    def next_event(self) -> object:
        line, nl, rest = self._in.partition(b"\n")
        if not nl or self.closed:
            return NEED
        self._in = rest
        return line.rstrip(b"\r")

    def answer(self, text: bytes) -> None:
        self._out.append(text + b"\r\n")

    def data_to_send(self) -> bytes:
        out, self._out = b"".join(self._out), []
        return out


class Echo(EngineDriver[LineEngine]):
    """Answers ``ok <line>``; WAIT waits for ``gate``; BOOM raises; QUIT closes."""

    need_data: ClassVar[object] = NEED
    idle_seconds: ClassVar[float] = 5.0

    def __init__(self, sessions: set[Any] | None = None) -> None:
        super().__init__(LineEngine(), set() if sessions is None else sessions, "echo:1")
        self.gate: asyncio.Future[None] | None = None
        self.failed = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.sessions.add(self)

    def handle(self, event: object) -> None:
        assert isinstance(event, bytes)
        if event == b"BOOM":
            raise RuntimeError("a bug")
        if event == b"WAIT":
            self.gate = asyncio.get_running_loop().create_future()
            self.wait_for(self._waited_for_gate(self.gate))
            return
        if event == b"QUIT":
            self.conn.answer(b"bye")
            self.conn.closed = True
            return
        self.conn.answer(b"ok " + event)

    async def _waited_for_gate(self, gate: asyncio.Future[None]) -> None:
        await gate
        self.conn.answer(b"waited")

    def internal_error(self) -> None:
        self.failed += 1
        super().internal_error()


class Transport:
    """What the driver uses of an asyncio transport, recorded."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.reading = True

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 1) if name == "peername" else default


def connect(session: Echo) -> Transport:
    transport = Transport()
    session.connection_made(cast(asyncio.BaseTransport, transport))
    return transport


def test_pipelined_lines_are_answered_in_one_write() -> None:
    session = Echo()
    transport = connect(session)
    session.data_received(b"A\r\nB\r\nC")
    session.data_received(b"\r\n")
    assert transport.writes == [b"ok A\r\nok B\r\n", b"ok C\r\n"]


def test_reads_through_the_shared_buffer() -> None:
    one, two = Echo(), Echo()
    t1, t2 = connect(one), connect(two)
    buffer = one.get_buffer(-1)
    assert two.get_buffer(-1) is buffer  # one per process
    buffer[:4] = b"X\r\nY"
    one.buffer_updated(4)
    buffer[:3] = b"Z\r\n"
    two.buffer_updated(3)
    one.data_received(b"\r\n")
    assert t1.writes == [b"ok X\r\n", b"ok Y\r\n"] and t2.writes == [b"ok Z\r\n"]


async def test_commands_wait_for_a_step_then_run_in_order() -> None:
    session = Echo()
    transport = connect(session)
    session.data_received(b"A\r\nWAIT\r\nB\r\n")
    assert session.busy and transport.writes == [b"ok A\r\n"]  # flushed before waiting
    session.data_received(b"C\r\n")
    assert transport.writes == [b"ok A\r\n"]  # B and C wait
    assert session.gate is not None and session.task is not None
    session.gate.set_result(None)
    await session.task
    assert not session.busy
    assert transport.writes == [b"ok A\r\n", b"waited\r\nok B\r\nok C\r\n"]


async def test_reading_pauses_past_the_limit_while_busy_and_resumes_after() -> None:
    session = Echo()
    transport = connect(session)
    session.data_received(b"WAIT\r\n")
    session.data_received(b"x" * 1000 + b"\r\n")
    assert transport.reading  # a little input waits without pausing
    session.data_received(b"y" * session.max_input_while_busy + b"\r\n")
    assert not transport.reading and session.paused
    assert session.gate is not None and session.task is not None
    session.gate.set_result(None)
    await session.task
    assert transport.reading and not session.paused
    assert transport.writes[-1].startswith(b"waited\r\nok xxx")


def test_a_bug_in_handle_is_logged_and_ends_the_session(caplog: pytest.LogCaptureFixture) -> None:
    session = Echo()
    transport = connect(session)
    with caplog.at_level(logging.ERROR, "qtoaster.net"):
        session.data_received(b"A\r\nBOOM\r\nB\r\n")
    assert session.failed == 1 and transport.closed
    assert transport.writes == []  # "ok A" was not flushed: nothing after a bug
    assert "echo:1 internal error handling b'BOOM'" in caplog.text


async def test_a_bug_in_a_waiting_step_ends_the_session(caplog: pytest.LogCaptureFixture) -> None:
    session = Echo()
    transport = connect(session)
    session.data_received(b"WAIT\r\n")
    assert session.gate is not None and session.task is not None
    session.gate.set_exception(RuntimeError("a bug"))
    with caplog.at_level(logging.ERROR, "qtoaster.net"):
        await session.task
    assert session.failed == 1 and transport.closed and not session.busy
    assert "echo:1 internal error" in caplog.text


def test_a_closed_engine_closes_the_transport_after_its_last_answer() -> None:
    session = Echo()
    transport = connect(session)
    session.data_received(b"QUIT\r\nA\r\n")
    assert transport.writes == [b"bye\r\n"] and transport.closed
    session.write(b"late")  # nothing is written once closing
    session.flush()
    assert transport.writes == [b"bye\r\n"]


def test_eof_reaches_the_engine_and_lost_leaves_the_session_set() -> None:
    sessions: set[Any] = set()
    session = Echo(sessions)
    transport = connect(session)
    assert sessions == {session}
    session.data_received(b"A\r\nB")
    assert session.eof_received() is False
    assert session.conn.eof and transport.writes == [b"ok A\r\n"]
    session.connection_lost(None)
    assert sessions == set()


async def test_a_writer_waits_until_the_client_reads_or_leaves() -> None:
    session = Echo()
    connect(session)
    assert not session.writing_paused
    await session.wait_drained()  # never paused: returns at once
    session.pause_writing()
    assert session.writing_paused
    waiter = asyncio.ensure_future(session.wait_drained())
    await asyncio.sleep(0)
    assert not waiter.done()
    session.resume_writing()
    await waiter
    session.pause_writing()
    waiter = asyncio.ensure_future(session.wait_drained())
    session.connection_lost(None)  # a lost client wakes the writer too
    await waiter


def test_a_partial_line_is_no_activity() -> None:
    """The timeout counts from when the engine began waiting for a command: bytes of a line
    dribbled in do not push it back (slowloris), a complete line does."""
    session = Echo()
    transport = connect(session)
    session.last_activity = start = 100.0  # as if the last command came long ago
    for byte in b"NOOP":
        session.data_received(bytes([byte]))
    assert session.last_activity == start and transport.writes == []
    session.data_received(b"\r\n")
    assert session.last_activity > start and transport.writes == [b"ok NOOP\r\n"]


def test_idle_limit_and_plain_ip() -> None:
    session = Echo()
    assert session.idle_limit() == 5.0 and session.idle
    assert plain_ip("::ffff:192.0.2.1") == "192.0.2.1"
    assert plain_ip("::ffff:1") == "::ffff:1" and plain_ip("2001:db8::1") == "2001:db8::1"


async def test_on_a_loopback_socket() -> None:
    loop = asyncio.get_running_loop()
    sessions: set[Any] = set()
    server = await loop.create_server(lambda: Echo(sessions), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"A\r\nWAIT\r\nB\r\n")
    assert await reader.readline() == b"ok A\r\n"
    (session,) = sessions
    assert session.gate is not None
    session.gate.set_result(None)
    writer.write(b"QUIT\r\nC\r\n")
    assert await reader.read() == b"waited\r\nok B\r\nbye\r\n"  # then EOF: closed
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
    assert sessions == set()
