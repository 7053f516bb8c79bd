"""An imapd worker process: serves IMAP sessions on already-bound sockets.

Like pop3d, N workers (two per core by default, ``[imapd] workers``) share the listeners on
SO_REUSEPORT sockets. Listeners, signals, the idle sweep and the graceful stop are
:func:`qtoaster.net.serve.serve`'s. Signals: SIGTERM/SIGINT stop accepting and end the
sessions (``* BYE``) once no command is in flight (at most GRACE_SECONDS: every change a
command makes is written through the store before its tagged answer, so closing between
commands loses nothing); SIGHUP re-reads the configuration (certificates included) for
new sessions.
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
from qtoaster.config.loader import Config, load_config
from qtoaster.core.errors import ConfigError
from qtoaster.core.home import Home
from qtoaster.imapd.context import ImapContext
from qtoaster.imapd.session import ImapSession
from qtoaster.net.serve import serve as serve_listeners

log = logging.getLogger("qtoaster.imapd")
# The store's reads and writes (local) or the broker's opens run here, off the loop.
IO_THREADS = 8
# The offer of CRAM-MD5 follows the directory within seconds (the auth role caches it).
SECRETS_CHECK_SECONDS = 2.0
STARTUP_CHECK_SECONDS = 5.0
# A stop waits this long for commands in flight (a login, a big FETCH, an APPEND).
GRACE_SECONDS = 10.0


class ImapWorker:
    def __init__(self, home: Home) -> None:
        self.home = home
        config = load_config(home)
        self.executor = ThreadPoolExecutor(IO_THREADS, thread_name_prefix="imap-io")
        self.auth = AuthClient(socket_path(home))  # checks logins, holds the throttle
        self.secrets = [False]  # some account keeps CRAM-MD5 secrets (refreshed)
        self.ctx = self._build(config)
        self.sessions: set[ImapSession] = set()
        self.stop = asyncio.Event()

    def _build(self, config: Config) -> ImapContext:
        return ImapContext.build(config, self.executor, self.auth, self.secrets)

    def reload(self) -> None:
        try:
            self.ctx = self._build(load_config(self.home))
            log.info("imapd reloaded configuration")
        except ConfigError as exc:
            log.error("reload refused, keeping the running configuration:\n%s", exc)

    def new_session(self, kind: str) -> ImapSession:
        return ImapSession(self.ctx, self.sessions, kind)

    async def check_secrets(self) -> None:
        answer = await self.auth.mechanisms()
        if answer is not None:  # keep the last answer while the auth role is away
            self.secrets[0] = answer.cram

    async def watch_secrets(self) -> None:
        """CRAM-MD5 is offered only while accounts keep secrets, as pop3d decides it:
        asked again every SECRETS_CHECK_SECONDS."""
        while True:
            await asyncio.sleep(SECRETS_CHECK_SECONDS)
            await self.check_secrets()

    async def serve(
        self, sockets: Iterable[tuple[str, socket.socket]], ready: Callable[[], None]
    ) -> None:
        """Serve ``(kind, socket)`` listeners (imap, imaps) until SIGTERM/SIGINT."""
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
        await self.auth.close()
