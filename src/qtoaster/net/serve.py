"""serve(): what every worker process does with its listening sockets until it is told to stop.

A worker (smtpd, pop3d) inherits bound listening sockets from the supervisor, each tagged
with its kind (``smtp``, ``submission``, ``smtps``, ``pop3``, ``pop3s``). :func:`serve`
accepts on all of them, makes one session per connection with the role's factory, times
idle sessions out, and answers the signals of DESIGN.md 2:

- SIGTERM, SIGINT: stop accepting; wait up to ``grace()`` seconds until every session is
  :attr:`~Session.idle`; then :meth:`~Session.shut_down` each session (the role decides
  what a busy one does: smtpd lets a commit finish, pop3d closes); then wait up to
  ``overtime`` more seconds while a session is still busy; return.
- SIGHUP: ``reload()`` (new sessions get the new configuration; running ones keep theirs).

Accepting is :mod:`qtoaster.net.accept`'s: within the role's ``limits()`` (asked at every
accept, so a reload applies to the next connection), and a failed accept (out of open
files) logged at most once a second, for both roles.

Implicit TLS (smtps, pop3s) is the session's: it starts the handshake itself with the
context of the configuration it was made with, so a reloaded certificate applies to new
connections and a failed handshake is logged like a failed STARTTLS.

Invariants: ``ready()`` is called once every listener accepts and the signal handlers are
in place; the role's background tasks and the idle sweep are cancelled before :func:`serve`
returns (the role then shuts its thread pools down); a session is timed out only when it is
not busy and no complete command arrived for its :meth:`~Session.idle_limit` (a line
dribbled byte by byte does not count as activity: issue 12, slowloris).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
from collections.abc import Callable, Collection, Coroutine, Iterable
from typing import Any, Protocol

from qtoaster.net.accept import Accepted, Acceptor, Counts, RateLimitedLog
from qtoaster.net.limits import Limits

SWEEP_SECONDS = 1.0  # how often idle sessions are looked for (qmail's timeouts are seconds)
POLL_SECONDS = 0.05  # how often the drain looks at the sessions while stopping


class Session(Protocol):
    """What :func:`serve` uses of a session (:class:`qtoaster.net.driver.EngineDriver`)."""

    busy: bool
    last_activity: float

    @property
    def idle(self) -> bool: ...

    def idle_limit(self) -> float: ...

    def timed_out(self) -> None: ...

    def shut_down(self) -> None: ...


async def serve(
    listeners: Iterable[tuple[str, socket.socket]],
    new_session: Callable[[str], Accepted],
    sessions: Collection[Session],
    *,
    ready: Callable[[], None],
    reload: Callable[[], None],
    grace: Callable[[], float],
    overtime: float = 0.0,
    stop: asyncio.Event | None = None,
    background: Iterable[Callable[[], Coroutine[Any, Any, None]]] = (),
    sweep_seconds: float = SWEEP_SECONDS,
    limits: Callable[[], Limits | None] = lambda: None,
) -> None:
    """Serve ``(kind, socket)`` listeners until SIGTERM/SIGINT (or ``stop`` is set).

    ``new_session(kind)`` makes the protocol of one connection; ``sessions`` is the live
    set the sessions register in (and leave in connection_lost). ``grace()`` is asked when
    the stop comes (a reload may have changed it). ``background`` coroutines (the role's
    own periodic work) run while serving; ``limits()`` (None: no limit) bounds the
    connections this worker holds."""
    loop = asyncio.get_running_loop()
    stop = stop if stop is not None else asyncio.Event()
    counts = Counts()
    errors, refusals = RateLimitedLog(logging.ERROR), RateLimitedLog(logging.INFO)
    acceptors = [
        Acceptor(kind, sock, new_session, counts, limits, errors, refusals)
        for kind, sock in listeners
    ]
    for acceptor in acceptors:
        acceptor.start()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload)
    tasks = [loop.create_task(sweep(sessions, sweep_seconds))]
    tasks += [loop.create_task(work()) for work in background]
    ready()
    await stop.wait()
    for acceptor in acceptors:
        acceptor.close()
    await drain(sessions, grace(), overtime)
    for task in tasks:
        task.cancel()


async def sweep(sessions: Collection[Session], every: float) -> None:
    """Time out sessions idle past their limit, every ``every`` s: ``last_activity`` is when
    the session began waiting for a command, so the limit bounds a whole command line, not
    one read (qmail's per-read timeout let a client dribbling a byte now and then stay)."""
    while True:
        await asyncio.sleep(every)
        now = time.monotonic()
        for session in list(sessions):
            if not session.busy and now - session.last_activity > session.idle_limit():
                session.timed_out()


async def drain(sessions: Collection[Session], grace: float, overtime: float) -> None:
    """The graceful stop: sessions get ``grace`` seconds to become idle, then are shut
    down; busy ones get ``overtime`` seconds more to finish."""
    deadline = time.monotonic() + grace
    while sessions and time.monotonic() < deadline:
        if all(s.idle for s in sessions):
            break
        await asyncio.sleep(POLL_SECONDS)
    for session in list(sessions):
        session.shut_down()
    while any(s.busy for s in sessions) and time.monotonic() < deadline + overtime:
        await asyncio.sleep(POLL_SECONDS)
