"""An smtpd worker process: serves SMTP sessions on already-bound sockets.

N workers (one per core by default) serve the same listeners, each on its own
SO_REUSEPORT socket, so receiving uses every core despite the GIL (DESIGN.md 2).
Listeners, signals, the idle timeout (control/timeoutsmtpd, per session) and the graceful
stop are :func:`qtoaster.net.serve.serve`'s.

Signals: SIGTERM/SIGINT stop accepting, let sessions finish up to a grace period,
then answer the rest ``421`` and close; commits in flight always complete.
SIGHUP re-reads the configuration: new sessions get it, running ones keep theirs.

Connection limits (tcpserver's ``-c``, per client address its ``MAXCONNIP`` patches): a
worker holds its share of [smtpd] max_connections (split over the ``workers``, fitted to
its open-file limit by :func:`qtoaster.net.limits.fit_connections`) and max_per_ip from
one address; an excess connection gets ``421 <me> too many connections ...`` and is closed.
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
from qtoaster.config.loader import load_config
from qtoaster.core.errors import ConfigError
from qtoaster.core.home import Home
from qtoaster.core.reply import too_many_connections
from qtoaster.directory.cache import CachedLookups
from qtoaster.directory.lazy import LazyDirectory
from qtoaster.net.limits import Limits, fit_connections
from qtoaster.net.serve import serve as serve_listeners
from qtoaster.smtpd.context import SmtpdContext, WorkerShared
from qtoaster.smtpd.session import SmtpSession

log = logging.getLogger("qtoaster.smtpd")
COMMIT_THREADS = 4  # enough fsyncs in flight for group commit; more only fight for the GIL
LOOKUP_THREADS = 4
# The offer follows the directory within seconds (the auth role caches it as long).
SECRETS_CHECK_SECONDS = 2.0
STARTUP_CHECK_SECONDS = 5.0
# A stop lets sessions finish their transaction for up to timeoutsmtpd, at most this long;
# commits still in flight then get OVERTIME_SECONDS more (their client gets the 250).
MAX_GRACE_SECONDS = 30.0
OVERTIME_SECONDS = 5.0


class Worker:
    def __init__(self, home: Home, workers: int = 1) -> None:
        self.home = home
        self.workers = workers  # smtpd processes sharing the listeners
        self.executor = ThreadPoolExecutor(COMMIT_THREADS, thread_name_prefix="commit")
        config = load_config(home)
        directory = LazyDirectory(home, config.settings.database_url)
        self.shared = WorkerShared(
            directory=directory,
            lookups=CachedLookups(directory),
            # Directory lookups (chkuser) get their own threads: a slow database must not
            # hold up commits, nor commits the lookups.
            lookup_executor=ThreadPoolExecutor(LOOKUP_THREADS, thread_name_prefix="lookup"),
            auth=AuthClient(socket_path(home)),
        )
        self.ctx = SmtpdContext.build(config, self.executor, self.shared)
        self.limits = self._limits()
        self.sessions: set[SmtpSession] = set()
        self.stop = asyncio.Event()

    def reload(self) -> None:
        try:
            config = load_config(self.home)
            url = config.settings.database_url
            if url != self.ctx.config.settings.database_url:
                old = self.shared.directory
                self.shared.directory = LazyDirectory(self.home, url)
                self.shared.lookups = CachedLookups(self.shared.directory)
                old.close()
            old_settings = self.ctx.config.settings
            self.ctx = SmtpdContext.build(config, self.executor, self.shared)
            if (old_settings.max_connections, old_settings.max_per_ip) != (
                config.settings.max_connections,
                config.settings.max_per_ip,
            ):
                self.limits = self._limits()
            log.info("smtpd smtpd reloaded configuration")
        except ConfigError as exc:
            log.error("smtpd reload refused, keeping the running configuration:\n%s", exc)

    async def check_secrets(self) -> None:
        """Whether to offer CRAM-MD5 (every account keeps secrets), asked of the auth role
        in the background: EHLO must not wait for it."""
        answer = await self.shared.auth.mechanisms()
        if answer is not None:  # keep the last answer while the auth role is away
            self.shared.cram_available = answer.cram

    async def watch_secrets(self) -> None:
        while True:
            await asyncio.sleep(SECRETS_CHECK_SECONDS)
            await self.check_secrets()

    def _limits(self) -> Limits:
        settings = self.ctx.config.settings
        me = self.ctx.config.controls.me
        refusals = {per_ip: too_many_connections(me, per_ip).render() for per_ip in (False, True)}

        def refusal(kind: str, per_ip: bool) -> bytes:
            # Implicit TLS: the client speaks TLS first and could not read a plain 421.
            return b"" if kind == "smtps" else refusals[per_ip]

        def exempt(ip: str) -> bool:
            # As Postfix exempts mynetworks: a client tcp.smtp trusts to relay is not held
            # to max_per_ip (an application server, a relaying gateway, the benchmarks).
            # ``ip`` is already plain (net.accept applies plain_ip before asking).
            return "RELAYCLIENT" in self.ctx.config.tcp_smtp.match(ip).env

        total = fit_connections(settings.max_connections, self.workers, log)
        return Limits(total=total, per_ip=settings.max_per_ip, refusal=refusal, exempt=exempt)

    def new_session(self, kind: str = "smtp") -> SmtpSession:
        return SmtpSession(self.ctx, self.sessions, kind)

    async def serve(
        self, sockets: Iterable[tuple[str, socket.socket]], ready: Callable[[], None]
    ) -> None:
        """Serve ``(kind, socket)`` listeners: smtp, submission or smtps."""
        # Known before the first EHLO (bounded: a database that is down must not keep the
        # worker from serving).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.check_secrets(), STARTUP_CHECK_SECONDS)
        await serve_listeners(
            sockets,
            self.new_session,
            self.sessions,
            ready=ready,
            reload=self.reload,
            # Asked when the stop comes: a reload may have changed timeoutsmtpd.
            grace=lambda: min(float(self.ctx.config.controls.timeoutsmtpd), MAX_GRACE_SECONDS),
            overtime=OVERTIME_SECONDS,
            stop=self.stop,
            background=[self.watch_secrets],
            limits=lambda: self.limits,
        )
        self.executor.shutdown(wait=True)
        self.shared.lookup_executor.shutdown(wait=True)
        self.shared.directory.close()
        await self.shared.auth.close()
