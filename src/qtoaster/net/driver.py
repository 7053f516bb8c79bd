"""EngineDriver: the asyncio side of a sans-IO server engine (SMTP, POP3), one session each.

A role's session subclasses :class:`EngineDriver`, names its engine's NEED_DATA sentinel
and answers the engine's events in :meth:`EngineDriver.handle`. The driver owns the
transport: it reads into the engine, takes events until the engine needs more input,
flushes the engine's answers, and holds commands back while a step that waits (a thread,
a delay, a TLS handshake) is in flight.

Invariants:
- :meth:`EngineDriver.write` is the only place that writes to the transport, and it writes
  nothing once the transport is closing;
- answers are flushed once per batch of input (RFC 2920 / RFC 2449 6.6 pipelining: every
  answer to a batch of pipelined commands leaves in one write), and before a wait starts;
- while ``busy`` no event is taken: input stays in the engine, in order, and reading pauses
  once more than ``max_input_while_busy`` bytes wait; :meth:`EngineDriver.resume` reads
  again and handles them;
- the hot path is per read, not per command: no task, no await, no allocation besides the
  one copy of the bytes read (the receive buffer is one per process);
- ``last_activity`` is when the engine began waiting for its next command: stamped when a
  batch of input yielded at least one event and when a wait ends, never for a read that
  only adds to a partial line, so a line dribbled byte by byte still times out (issue 12:
  slowloris) while the sweep needs no clock read per read;
- :meth:`EngineDriver.connection_lost` leaves the role's session set and calls ``on_close``
  (the worker's connection count), whatever ended the connection, and wakes a writer
  waiting for the client (:meth:`wait_drained`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar, Generic, Protocol, TypeVar, cast

_log = logging.getLogger("qtoaster.net")

# One receive buffer per process: the event loop reads into it and the bytes are copied
# out at once, so no session holds a buffer while idle and no 256 KiB bytes object is
# allocated (and shrunk) per read, as asyncio's plain Protocol path does.
_READ_BUFFER = memoryview(bytearray(65536))


class Engine(Protocol):
    """What the driver uses of a sans-IO server engine (protocols.smtp, protocols.pop3)."""

    closed: bool

    @property
    def buffered(self) -> int: ...

    def receive_data(self, data: bytes) -> None: ...

    def next_event(self) -> object: ...

    def data_to_send(self) -> bytes: ...


E = TypeVar("E", bound=Engine)


class EngineDriver(asyncio.BufferedProtocol, Generic[E]):
    """One connection driven through one engine; see the module docstring."""

    # Slots, here and in the roles' sessions and their parts: an idle connection costs no
    # instance dict (bench/run's idle PSS per connection).
    __slots__ = (
        "_drained",
        "busy",
        "conn",
        "id",
        "last_activity",
        "on_close",
        "paused",
        "sessions",
        "task",
        "transport",
    )

    need_data: ClassVar[object]  # the engine's NEED_DATA sentinel
    log: ClassVar[logging.Logger] = _log  # the role's logger: "<id> internal error ..."
    max_input_while_busy: ClassVar[int] = 65536
    idle_seconds: ClassVar[float]  # see idle_limit()

    def __init__(self, conn: E, sessions: set[Any], session_id: str) -> None:
        self.conn = conn
        self.sessions = sessions  # the role's live sessions; left in connection_lost
        self.id = session_id
        self.transport: asyncio.Transport | None = None
        self.busy = False  # a step that waits is in flight: commands wait for it
        self.paused = False  # reading paused by the driver while busy
        self.last_activity = time.monotonic()
        self.task: asyncio.Task[None] | None = None
        self._drained: asyncio.Event | None = None  # made on the first pause_writing
        # Set by net.accept: gives the connection's place in the worker's limits back.
        self.on_close: Callable[[], None] | None = None

    # -- what a role provides --------------------------------------------------------
    def handle(self, event: object) -> None:
        """Answer one event of the engine (the answer may wait: :meth:`wait_for`)."""
        raise NotImplementedError

    def internal_error(self) -> None:
        """A bug while handling an event or in a waiting step (already logged): end the
        session so that it neither looks like success nor hangs the client."""
        self.close()

    def timed_out(self) -> None:
        """No complete command for :meth:`idle_limit` seconds while not busy (the sweep)."""
        self.close()

    def shut_down(self) -> None:
        """The worker stops and its grace period is over: end the session."""
        self.close()

    def idle_limit(self) -> float:
        """Seconds after ``last_activity`` (the engine began waiting for a command) after
        which the session times out, however many bytes of a command arrived meanwhile."""
        return self.idle_seconds

    @property
    def idle(self) -> bool:
        """Closing now would lose nothing the client thinks was done (the drain waits)."""
        return not self.busy

    # -- asyncio callbacks -----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return _READ_BUFFER

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(_READ_BUFFER[:nbytes]))

    def data_received(self, data: bytes) -> None:
        self.conn.receive_data(data)
        if self.busy:
            if self.conn.buffered > self.max_input_while_busy and self.transport is not None:
                self.transport.pause_reading()
                self.paused = True
            return
        self.process()

    def eof_received(self) -> bool:
        self.conn.receive_data(b"")
        self.process()
        return False  # the engine answers what it can, then the transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        self.sessions.discard(self)
        if self.on_close is not None:
            self.on_close()
        if self._drained is not None:
            self._drained.set()

    def pause_writing(self) -> None:
        if self._drained is None:
            self._drained = asyncio.Event()
        self._drained.clear()

    def resume_writing(self) -> None:
        if self._drained is not None:
            self._drained.set()

    # -- driving the engine ----------------------------------------------------------
    def process(self) -> None:
        """Handle events until the engine needs input or a step waits, then flush."""
        need_data = self.need_data
        handled = False
        while not self.busy and self.transport is not None and not self.transport.is_closing():
            event = self.conn.next_event()
            if event is need_data:
                break
            handled = True
            try:
                self.handle(event)
            except Exception:
                self.log.exception("net %s internal error handling %r", self.id, event)
                self.internal_error()
                return
        if handled:  # the engine now waits for a new command: its deadline starts here
            self.last_activity = time.monotonic()
        self.flush()

    def flush(self) -> None:
        """Send what the engine has to send; close once the engine is closed."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self.write(self.conn.data_to_send())
        if self.conn.closed:
            transport.close()

    def write(self, data: bytes) -> None:
        """The one way bytes reach the client (nothing once the transport is closing)."""
        transport = self.transport
        if data and transport is not None and not transport.is_closing():
            transport.write(data)

    def close(self) -> None:
        """Close the transport (what the engine has not flushed is not sent)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    @property
    def is_open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    # -- steps that wait ---------------------------------------------------------------
    def wait_for(self, step: Coroutine[Any, Any, None]) -> None:
        """Run ``step`` (a thread, a delay, TLS) as a task; commands wait until it ends,
        then the ones that arrived meanwhile are handled in order."""
        self.busy = True
        self.task = asyncio.get_running_loop().create_task(self._waited(step))

    async def _waited(self, step: Coroutine[Any, Any, None]) -> None:
        try:
            await step
        except Exception:
            self.log.exception("net %s internal error", self.id)
            self.internal_error()
            return
        finally:
            self.busy = False
            self.last_activity = time.monotonic()
        if self.is_open:
            self.resume()

    def resume(self) -> None:
        """After a wait: read again if reading was paused, handle what is buffered."""
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        self.process()

    @property
    def writing_paused(self) -> bool:
        """The transport's buffer is over its high-water mark (the client lags)."""
        return self._drained is not None and not self._drained.is_set()

    async def wait_drained(self) -> None:
        """Until the client has read enough (or the connection is gone)."""
        if self._drained is not None:
            await self._drained.wait()


def peer_ip(transport: asyncio.BaseTransport) -> str:
    """The client's address, plain (:func:`plain_ip`); ``unknown`` when the transport
    does not say."""
    peer = transport.get_extra_info("peername") or ("unknown", 0)
    return plain_ip(str(peer[0]))


def tls_version(transport: asyncio.BaseTransport | None) -> str | None:
    """``TLSv1.3`` when the connection is under TLS, else None (for log lines)."""
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    return None if ssl_object is None else cast(str | None, ssl_object.version())


def plain_ip(ip: str) -> str:
    """``::ffff:127.0.0.1`` (a v4 client on a dual-stack socket) -> ``127.0.0.1``."""
    return ip[7:] if ip.startswith("::ffff:") and "." in ip else ip
