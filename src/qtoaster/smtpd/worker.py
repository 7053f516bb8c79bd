"""An smtpd worker process: serves SMTP sessions on already-bound sockets.

N workers (one per core by default) serve the same listeners, each on its own
SO_REUSEPORT socket, so receiving uses every core despite the GIL (DESIGN.md 2).

Signals: SIGTERM/SIGINT stop accepting, let sessions finish up to a grace period,
then answer the rest ``421`` and close; commits in flight always complete.
SIGHUP re-reads the configuration: new sessions get it, running ones keep theirs.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from qtoaster.config.loader import Config, load_config
from qtoaster.core.errors import ConfigError
from qtoaster.core.home import Home
from qtoaster.core.reply import SHUTTING_DOWN, TIMEOUT
from qtoaster.directory.cache import CachedLookups
from qtoaster.directory.lazy import LazyDirectory
from qtoaster.smtpd.context import SmtpdContext
from qtoaster.smtpd.session import SmtpSession

log = logging.getLogger("qtoaster.smtpd")
COMMIT_THREADS = 4  # enough fsyncs in flight for group commit; more only fight for the GIL
LOOKUP_THREADS = 4
SWEEP_SECONDS = 1.0
MAX_GRACE_SECONDS = 30.0


class Worker:
    def __init__(self, home: Home) -> None:
        self.home = home
        self.executor = ThreadPoolExecutor(COMMIT_THREADS, thread_name_prefix="commit")
        # Directory lookups (chkuser) get their own threads: a slow database must not hold
        # up commits, nor commits the lookups.
        self.lookup_executor = ThreadPoolExecutor(LOOKUP_THREADS, thread_name_prefix="lookup")
        config = load_config(home)
        self.directory = LazyDirectory(home, config.settings.database_url)
        self.lookups = CachedLookups(self.directory)
        self.ctx = self._build(config)
        self.sessions: set[SmtpSession] = set()
        self.stop = asyncio.Event()

    def _build(self, config: Config) -> SmtpdContext:
        return SmtpdContext.build(config, self.executor, self.lookups, self.lookup_executor)

    def reload(self) -> None:
        try:
            config = load_config(self.home)
            url = config.settings.database_url
            if url != self.ctx.config.settings.database_url:
                old, self.directory = self.directory, LazyDirectory(self.home, url)
                self.lookups = CachedLookups(self.directory)
                old.close()
            self.ctx = self._build(config)
            log.info("smtpd reloaded configuration")
        except ConfigError as exc:
            log.error("reload refused, keeping the running configuration:\n%s", exc)

    def new_session(self) -> SmtpSession:
        return SmtpSession(self.ctx, self.sessions)

    async def sweep(self) -> None:
        """qmail's per-read timeout (control/timeoutsmtpd), checked once a second."""
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            now = time.monotonic()
            for session in list(self.sessions):
                limit = max(session.ctx.config.controls.timeoutsmtpd, 1)
                if not session.busy and now - session.last_activity > limit:
                    session.expire(TIMEOUT)

    async def serve(self, sockets: Iterable[socket.socket], ready: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        servers = [
            await loop.create_server(self.new_session, sock=sock, backlog=4096) for sock in sockets
        ]
        loop.add_signal_handler(signal.SIGTERM, self.stop.set)
        loop.add_signal_handler(signal.SIGINT, self.stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        sweeper = loop.create_task(self.sweep())
        ready()
        await self.stop.wait()
        for server in servers:
            server.close()
        await self._drain()
        sweeper.cancel()
        self.executor.shutdown(wait=True)
        self.lookup_executor.shutdown(wait=True)
        self.directory.close()

    async def _drain(self) -> None:
        grace = min(float(self.ctx.config.controls.timeoutsmtpd), MAX_GRACE_SECONDS)
        deadline = time.monotonic() + grace
        while self.sessions and time.monotonic() < deadline:
            if all(s.idle for s in self.sessions):
                break
            await asyncio.sleep(0.05)
        for session in list(self.sessions):
            if not session.busy:
                session.expire(SHUTTING_DOWN)
        while any(s.busy for s in self.sessions) and time.monotonic() < deadline + 5:
            await asyncio.sleep(0.05)
