"""A pop3d worker process: serves POP3 sessions on already-bound sockets.

Like smtpd, N workers (one per core) share the listeners on SO_REUSEPORT sockets.
Signals: SIGTERM/SIGINT stop accepting and close idle sessions (a session in the middle
of a command finishes it; RFC 1939's UPDATE happens only at QUIT, so closing loses
nothing); SIGHUP re-reads the configuration (certificates included) for new sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from qtoaster.auth.throttle import LoginThrottle
from qtoaster.config.loader import Config, load_config
from qtoaster.core.errors import ConfigError, TemporaryFailure
from qtoaster.core.home import Home
from qtoaster.directory.lazy import LazyDirectory
from qtoaster.pop3d.context import Pop3Context
from qtoaster.pop3d.session import Pop3Session

log = logging.getLogger("qtoaster.pop3d")
# qmail-popup and qmail-pop3d exit after 20 idle minutes (spec 19.1).
IDLE_SECONDS = 1200.0
SWEEP_SECONDS = 1.0
AUTH_THREADS = 4
SECRETS_CHECK_SECONDS = 30.0
STARTUP_CHECK_SECONDS = 5.0


class Pop3Worker:
    def __init__(self, home: Home) -> None:
        self.home = home
        config = load_config(home)
        self.directory = LazyDirectory(home, config.settings.database_url)
        # argon2 and the database off the loop; Maildir scans and QUIT's updates too.
        self.executor = ThreadPoolExecutor(AUTH_THREADS, thread_name_prefix="pop3-io")
        self.throttle = LoginThrottle.from_settings(config.settings)
        self.secrets = [False]  # some account keeps APOP/CRAM-MD5 secrets (refreshed)
        self.ctx = self._build(config)
        self.sessions: set[Pop3Session] = set()
        self.stop = asyncio.Event()

    def _build(self, config: Config) -> Pop3Context:
        return Pop3Context.build(config, self.directory, self.executor, self.throttle, self.secrets)

    def reload(self) -> None:
        try:
            config = load_config(self.home)
            if config.settings.database_url != self.ctx.config.settings.database_url:
                old, self.directory = (
                    self.directory,
                    LazyDirectory(self.home, config.settings.database_url),
                )
                old.close()
            self.throttle.update(config.settings)
            self.ctx = self._build(config)
            log.info("pop3d reloaded configuration")
        except ConfigError as exc:
            log.error("reload refused, keeping the running configuration:\n%s", exc)

    def new_session(self, kind: str) -> Pop3Session:
        return Pop3Session(self.ctx, self.sessions, kind)

    async def check_secrets(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self.secrets[0] = await loop.run_in_executor(
                self.executor, self.directory.secrets_everywhere
            )
        except TemporaryFailure:
            pass

    async def watch(self) -> None:
        """Idle sessions time out (spec 19.1); CRAM-MD5/APOP availability is refreshed."""
        next_secrets = time.monotonic() + SECRETS_CHECK_SECONDS
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            now = time.monotonic()
            for session in list(self.sessions):
                if not session.busy and now - session.last_activity > IDLE_SECONDS:
                    session.close()
            if now >= next_secrets:
                next_secrets = now + SECRETS_CHECK_SECONDS
                await self.check_secrets()

    async def serve(
        self, sockets: Iterable[tuple[str, socket.socket]], ready: Callable[[], None]
    ) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.check_secrets(), STARTUP_CHECK_SECONDS)
        servers = [
            await loop.create_server(partial(self.new_session, kind), sock=sock, backlog=4096)
            for kind, sock in sockets
        ]
        loop.add_signal_handler(signal.SIGTERM, self.stop.set)
        loop.add_signal_handler(signal.SIGINT, self.stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        watcher = loop.create_task(self.watch())
        ready()
        await self.stop.wait()
        for server in servers:
            server.close()
        deadline = time.monotonic() + 10.0
        while any(s.busy for s in self.sessions) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for session in list(self.sessions):
            session.close()
        watcher.cancel()
        self.executor.shutdown(wait=True)
        self.directory.close()
