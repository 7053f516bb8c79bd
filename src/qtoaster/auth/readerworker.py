"""What a mail reader's worker process (pop3d, imapd) does besides its sessions.

Both roles log their users in through the auth role and serve already-bound sockets with
:func:`qtoaster.net.serve.serve`. :class:`MailReaderWorker` holds what they share: the
configuration and its reload (SIGHUP; a configuration that does not load is refused and
the running one kept), the thread pool, the auth role's client, the poll of whether the
secrets-based mechanisms (APOP, CRAM-MD5) may be offered, the serve loop and the order
things are closed in. A role says in hooks what is its own: its context, its sessions,
which flag of the auth role's mechanisms answer it offers by, and any resource of its own
(pop3d's directory).

Invariants:
- the secrets flag is asked once before serving (at most STARTUP_CHECK_SECONDS: an auth
  role or database that is down must not keep the worker from serving), then every
  SECRETS_CHECK_SECONDS; while the auth role does not answer the last answer is kept;
- after serve() returns the thread pool is shut down (waiting for its work), then the
  role's own resources are closed, then the auth client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, Generic, TypeVar

from qtoaster.auth.client import AuthClient
from qtoaster.auth.protocol import MechanismsResponse, socket_path
from qtoaster.config.loader import Config, load_config
from qtoaster.core.errors import ConfigError
from qtoaster.core.home import Home
from qtoaster.net.driver import EngineDriver
from qtoaster.net.serve import serve as serve_listeners

# The offer follows the directory within seconds (the auth role caches it as long).
SECRETS_CHECK_SECONDS = 2.0
STARTUP_CHECK_SECONDS = 5.0

C = TypeVar("C")  # the role's context (rebuilt on reload)
S = TypeVar("S", bound=EngineDriver[Any])  # the role's session


class MailReaderWorker(Generic[C, S]):
    """One worker of a mail reader role; subclasses fill in the hooks below."""

    role: ClassVar[str]  # "pop3d": its logger and log lines
    threads: ClassVar[int]  # the thread pool's size
    thread_prefix: ClassVar[str]
    # A stop waits this long for commands in flight, then ends every session.
    grace_seconds: ClassVar[float] = 10.0

    def __init__(self, home: Home) -> None:
        self.home = home
        self.log = logging.getLogger(f"qtoaster.{self.role}")
        config = load_config(home)
        self.executor = ThreadPoolExecutor(self.threads, thread_name_prefix=self.thread_prefix)
        self.auth = AuthClient(socket_path(home))  # checks logins, holds the throttle
        self.secrets = [False]  # the secrets-based mechanisms can be offered (polled)
        self.setup(config)
        self.ctx = self.build(config)
        self.sessions: set[S] = set()
        self.stop = asyncio.Event()

    # -- what a role provides --------------------------------------------------------
    def setup(self, config: Config) -> None:
        """The role's own resources, made before the first context."""

    def reconfigure(self, config: Config) -> None:
        """A reload loaded ``config``: adapt the role's own resources before the new
        context is built (``self.ctx`` is still the old one)."""

    def close(self) -> None:
        """The role's own resources, after the thread pool has stopped."""

    def build(self, config: Config) -> C:
        """The context new sessions get."""
        raise NotImplementedError

    def new_session(self, kind: str) -> S:
        raise NotImplementedError

    def offered(self, answer: MechanismsResponse) -> bool:
        """Which flag of the auth role's answer the role's secrets-based mechanisms follow."""
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------
    def reload(self) -> None:
        try:
            config = load_config(self.home)
            self.reconfigure(config)
            self.ctx = self.build(config)
            self.log.info("auth %s reloaded configuration", self.role)
        except ConfigError as exc:
            self.log.error("auth reload refused, keeping the running configuration:\n%s", exc)

    async def check_secrets(self) -> None:
        answer = await self.auth.mechanisms()
        if answer is not None:  # keep the last answer while the auth role is away
            self.secrets[0] = self.offered(answer)

    async def watch_secrets(self) -> None:
        """Asked again every SECRETS_CHECK_SECONDS (idle sessions are timed out by
        net.serve's sweep)."""
        while True:
            await asyncio.sleep(SECRETS_CHECK_SECONDS)
            await self.check_secrets()

    async def serve(
        self, sockets: Iterable[tuple[str, socket.socket]], ready: Callable[[], None]
    ) -> None:
        """Serve ``(kind, socket)`` listeners until SIGTERM/SIGINT."""
        # Known before the first CAPA/CAPABILITY (bounded: a database that is down must not
        # keep the worker from serving).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.check_secrets(), STARTUP_CHECK_SECONDS)
        await serve_listeners(
            sockets,
            self.new_session,
            self.sessions,
            ready=ready,
            reload=self.reload,
            grace=lambda: self.grace_seconds,
            stop=self.stop,
            background=[self.watch_secrets],
        )
        self.executor.shutdown(wait=True)
        self.close()
        await self.auth.close()
