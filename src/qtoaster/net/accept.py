"""Accepting connections on one listening socket, within the worker's limits.

:func:`qtoaster.net.serve.serve` accepts here rather than through ``loop.create_server``:
asyncio's accept loop logs a traceback for every failed accept, up to its backlog (4096)
times per wake-up, when the process is out of open files, and it has no way to refuse a
connection over a limit. Here:

- a connection over ``limits().total`` (all of this worker's connections) or
  ``limits().per_ip`` (from one client address; an IPv6 client's /64, see
  :func:`qtoaster.net.limits.client_key`) is accepted, gets the role's refusal
  (SMTP's ``421``; nothing on implicit TLS) and is closed at once, as tcpserver's ``-c``
  keeps its count; refusals are logged at most once a second, with how many there were;
- a failed accept (EMFILE, ENFILE, ENOBUFS, ENOMEM, ...) pauses accepting on that socket
  for RETRY_SECONDS and is logged at most once a second, with how many failed meanwhile;
  connections waiting in the backlog are accepted once files are free again.

Invariants: every admitted connection is counted in :class:`Counts` until it ends, and
given back exactly once, whatever ends it (the session's ``on_close`` hook, called from
its connection_lost, or a transport that could not be made); a refused connection is
never counted.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from typing import Any, Protocol, cast

from qtoaster.metrics import definitions as metrics
from qtoaster.net.driver import plain_ip
from qtoaster.net.limits import Limits, client_key

ACCEPT_BATCH = 64  # accepts per wake-up: others' readiness events are not starved
RETRY_SECONDS = 0.1  # after a failed accept (out of files), try again this much later
LOG_EVERY = 1.0  # seconds between two lines of one kind (accept errors, refusals)

log = logging.getLogger("qtoaster.net")


class Accepted(Protocol):
    """What the acceptor needs of a session: the hook it calls when the connection ends
    (:class:`qtoaster.net.driver.EngineDriver` calls it from connection_lost)."""

    on_close: Callable[[], None] | None


class RateLimitedLog:
    """One kind of line logged at most once every ``every`` seconds; a line says how many
    were left out since the one before."""

    def __init__(self, level: int, every: float = LOG_EVERY) -> None:
        self.level = level
        self.every = every
        self.last = -float("inf")
        self.left_out = 0

    def __call__(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self.last < self.every:
            self.left_out += 1
            return
        more = f" ({self.left_out} more since the last such line)" if self.left_out else ""
        log.log(self.level, message + "%s", *args, more)
        self.last, self.left_out = now, 0


class Counts:
    """The connections one worker holds: in all and by client (``client_key``: IPv6 /64)."""

    def __init__(self) -> None:
        self.total = 0
        self.by_ip: dict[str, int] = {}  # client_key -> connections

    def admits(self, ip: str, limits: Limits) -> str | None:
        """None if a connection from ``ip`` fits; else which limit it is over."""
        if self.total >= limits.total:
            return "total"
        if self.by_ip.get(client_key(ip), 0) >= limits.per_ip and not limits.exempt(ip):
            return "per_ip"
        return None

    def take(self, ip: str) -> Callable[[], None]:
        """Count one connection from ``ip``; the returned function gives it back (once)."""
        ip = client_key(ip)
        self.total += 1
        self.by_ip[ip] = self.by_ip.get(ip, 0) + 1
        given_back = False

        def give_back() -> None:
            nonlocal given_back
            if given_back:
                return
            given_back = True
            self.total -= 1
            left = self.by_ip[ip] - 1
            if left:
                self.by_ip[ip] = left
            else:
                del self.by_ip[ip]

        return give_back


class Acceptor:
    """Accepts on one listening socket of ``kind`` until :meth:`close`."""

    def __init__(
        self,
        kind: str,
        sock: socket.socket,
        new_session: Callable[[str], Accepted],
        counts: Counts,
        limits: Callable[[], Limits | None],
        errors: RateLimitedLog,
        refusals: RateLimitedLog,
    ) -> None:
        self.kind = kind
        self.sock = sock
        self.new_session = new_session
        self.counts = counts
        self.limits = limits
        self.errors = errors
        self.refusals = refusals
        self.loop = asyncio.get_running_loop()
        self.retry: asyncio.TimerHandle | None = None
        self.closed = False
        self.tasks: set[asyncio.Task[Any]] = set()

    def start(self) -> None:
        self.sock.setblocking(False)
        self.loop.add_reader(self.sock.fileno(), self.readable)

    def close(self) -> None:
        """Stop accepting and close the listening socket (its backlog is dropped)."""
        if self.closed:
            return
        self.closed = True
        if self.retry is not None:
            self.retry.cancel()
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()

    def resume(self) -> None:
        self.retry = None
        if not self.closed:
            self.start()
            self.readable()

    def readable(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, address = self.sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                # Out of files (or buffers, memory): the socket stays readable, so stop
                # watching it for a moment instead of failing again at once.
                self.errors("%s accept failed: %s; accepting again shortly", self.kind, exc)
                self.loop.remove_reader(self.sock.fileno())
                self.retry = self.loop.call_later(RETRY_SECONDS, self.resume)
                return
            self.admit(conn, address)

    def admit(self, conn: socket.socket, address: Any) -> None:
        conn.setblocking(False)
        ip = plain_ip(str(address[0])) if isinstance(address, tuple) else "local"
        limits = self.limits()
        over = None if limits is None else self.counts.admits(ip, limits)
        if over is not None:
            assert limits is not None
            self.refuse(conn, ip, limits, over)
            return
        give_back = self.counts.take(ip)
        session = self.new_session(self.kind)
        metrics.session(self.kind)
        session.on_close = give_back
        task = self.loop.create_task(self.connect(conn, session, give_back))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def refuse(self, conn: socket.socket, ip: str, limits: Limits, over: str) -> None:
        # The send buffer of a new socket is empty: one short line never blocks.
        try:
            conn.send(limits.refusal(self.kind, over == "per_ip"))
        except OSError:
            pass
        conn.close()
        if over == "per_ip":
            key = client_key(ip)
            self.refusals(
                "%s refused client=%s: over max_per_ip %d%s",
                self.kind,
                ip,
                limits.per_ip,
                "" if key == ip else f" (counted as {key})",
            )
        else:
            self.refusals(
                "%s refused client=%s: over %d connections in this worker",
                self.kind,
                ip,
                limits.total,
            )

    async def connect(
        self, conn: socket.socket, session: Accepted, give_back: Callable[[], None]
    ) -> None:
        try:
            await self.loop.connect_accepted_socket(
                lambda: cast(asyncio.BaseProtocol, session), conn
            )
        except Exception as exc:  # the client left before its transport was made
            give_back()
            conn.close()
            self.errors("%s connection not set up: %s", self.kind, exc)
