"""A pop3d worker process: serves POP3 sessions on already-bound sockets.

Like smtpd, N workers (two per core by default, decisions/0006) share the listeners on
SO_REUSEPORT sockets. Listeners, signals, the idle timeout (spec 19.1: 20 minutes) and the
graceful stop are :func:`qtoaster.net.serve.serve`'s. Signals: SIGTERM/SIGINT stop
accepting and close the sessions once no command is in flight (at most GRACE_SECONDS;
RFC 1939's UPDATE happens only at QUIT, so closing loses nothing); SIGHUP re-reads the
configuration (certificates included) for new sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from qtoaster.auth.client import AuthClient
from qtoaster.auth.protocol import socket_path
from qtoaster.broker.protocol import socket_path as broker_socket_path
from qtoaster.config.loader import Config, load_config
from qtoaster.core.errors import ConfigError
from qtoaster.core.home import Home
from qtoaster.directory.lazy import LazyDirectory
from qtoaster.net.serve import serve as serve_listeners
from qtoaster.pop3d.context import Pop3Context
from qtoaster.pop3d.session import Pop3Session

log = logging.getLogger("qtoaster.pop3d")
AUTH_THREADS = 4
# The offer follows the directory within seconds (the auth role caches it as long).
SECRETS_CHECK_SECONDS = 2.0
STARTUP_CHECK_SECONDS = 5.0
# A stop waits this long for commands in flight (a login, a big RETR, QUIT's UPDATE), then
# closes every session: RFC 1939's UPDATE happens only at QUIT, so closing loses nothing.
GRACE_SECONDS = 10.0


class Pop3Worker:
    def __init__(self, home: Home) -> None:
        self.home = home
        config = load_config(home)
        self.directory = LazyDirectory(home, config.settings.database_url)
        # The database and Maildir scans off the loop, QUIT's updates too.
        self.executor = ThreadPoolExecutor(AUTH_THREADS, thread_name_prefix="pop3-io")
        self.auth = AuthClient(socket_path(home))  # checks logins, holds the throttle
        self.secrets = [False]  # some account keeps APOP/CRAM-MD5 secrets (refreshed)
        self.ctx = self._build(config)
        self.sessions: set[Pop3Session] = set()
        self.stop = asyncio.Event()

    def _build(self, config: Config) -> Pop3Context:
        return Pop3Context.build(
            config,
            self.directory,
            self.executor,
            self.auth,
            self.secrets,
            broker_socket_path(self.home),
        )

    def reload(self) -> None:
        try:
            config = load_config(self.home)
            if config.settings.database_url != self.ctx.config.settings.database_url:
                old, self.directory = (
                    self.directory,
                    LazyDirectory(self.home, config.settings.database_url),
                )
                old.close()
            self.ctx = self._build(config)
            log.info("pop3d reloaded configuration")
        except ConfigError as exc:
            log.error("reload refused, keeping the running configuration:\n%s", exc)

    def new_session(self, kind: str) -> Pop3Session:
        return Pop3Session(self.ctx, self.sessions, kind)

    async def check_secrets(self) -> None:
        answer = await self.auth.mechanisms()
        if answer is not None:  # keep the last answer while the auth role is away
            self.secrets[0] = answer.apop

    async def watch_secrets(self) -> None:
        """CRAM-MD5/APOP are offered only while every account keeps secrets: asked again
        every SECRETS_CHECK_SECONDS (idle sessions are timed out by net.serve's sweep)."""
        while True:
            await asyncio.sleep(SECRETS_CHECK_SECONDS)
            await self.check_secrets()

    async def serve(
        self, sockets: Iterable[tuple[str, socket.socket]], ready: Callable[[], None]
    ) -> None:
        """Serve ``(kind, socket)`` listeners (pop3, pop3s) until SIGTERM/SIGINT."""
        # Known before the first CAPA (bounded: a database that is down must not keep the
        # worker from serving).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.check_secrets(), STARTUP_CHECK_SECONDS)
        await serve_listeners(
            sockets,
            self.new_session,
            self.sessions,
            ready=ready,
            reload=self.reload,
            grace=lambda: GRACE_SECONDS,
            stop=self.stop,
            background=[self.watch_secrets],
        )
        self.executor.shutdown(wait=True)
        self.directory.close()
        await self.auth.close()
