"""Everything a session needs that is shared by the sessions of one worker.

Built once from a :class:`Config` (at start and on every SIGHUP) and swapped as a
whole: a session keeps the context it started with, like a qmail-smtpd process
that read its controls when tcpserver started it (spec section 1).  What must outlive
a reload (the directory, its threads, the login throttle) is a :class:`WorkerShared`.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field

from qtoaster.auth.throttle import LoginThrottle
from qtoaster.config.loader import Config
from qtoaster.directory.cache import CachedLookups
from qtoaster.directory.lazy import LazyDirectory
from qtoaster.policy.checks.chkuser import Chkuser, ChkuserSettings, maildir_percent
from qtoaster.policy.checks.databytes import Databytes
from qtoaster.policy.checks.rcpthosts import Rcpthosts
from qtoaster.policy.pipeline import Check, Pipeline
from qtoaster.queue.store import QueueStore
from qtoaster.tls.server import TlsError, server_context

log = logging.getLogger("qtoaster.smtpd")

# Variables a tcp.smtp rule or the process environment may set for a connection
# (tcp-environ(5) and the toaster's Table 2); read once, never while serving.
_PROCESS_VARIABLES = (
    "RELAYCLIENT",
    "DATABYTES",
    "TCPREMOTEINFO",
    "CHKUSER_START",
    "CHKUSER_RCPTLIMIT",
    "CHKUSER_WRONGRCPTLIMIT",
    "CHKUSER_MBXQUOTA",
    "CHKUSER_IDENTIFY",
    "SMTPS",
    "TLSCIPHERS",
)


@dataclass
class WorkerShared:
    """The worker's long-lived pieces: directory, its threads, the login throttle."""

    directory: LazyDirectory
    lookups: CachedLookups
    lookup_executor: Executor
    throttle: LoginThrottle
    cram_available: bool = False  # some account keeps CRAM-MD5 secrets (refreshed)
    extra: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SmtpdContext:
    config: Config
    pipeline: Pipeline
    store: QueueStore
    executor: Executor
    process_env: Mapping[str, str]
    hostname_pid: str
    shared: WorkerShared | None = None
    tls: ssl.SSLContext | None = None  # None: no certificate, no STARTTLS/SMTPS
    tls_problem: str = "missing certificate"  # why not, for ``454 TLS <problem> (#4.3.0)``
    # control/tlsclients exists: certificates are checked for relaying (spec 7.3); read
    # once per configuration, not per handshake.
    tls_clients: bool = False

    @classmethod
    def build(
        cls, config: Config, executor: Executor, shared: WorkerShared | None = None
    ) -> SmtpdContext:
        """The context for ``config``; without ``shared`` there is no directory (tests
        of the protocol alone): rcpthosts decides alone and AUTH is not available."""
        controls = config.controls
        settings = config.settings
        recipient: Check = Rcpthosts(controls)
        if shared is not None:  # chkuser decides even when "off": CHKUSER_START may enable it
            recipient = Chkuser(
                controls,
                shared.lookups,
                shared.lookup_executor,
                ChkuserSettings(
                    settings.chkuser_mode, settings.chkuser_delay, settings.chkuser_delay_increase
                ),
                maildir_percent(controls.me),
            )
        pipeline = Pipeline([Databytes(controls.databytes), recipient])
        store = QueueStore(config.home.queue, fsync=config.settings.fsync)
        env = {k: os.environ[k] for k in _PROCESS_VARIABLES if k in os.environ}
        tls, problem = None, "missing certificate"
        try:
            tls = server_context(
                config.home.control,
                env_ciphers=env.get("TLSCIPHERS"),
                min_version=settings.tls_min_version,
            )
        except TlsError as exc:
            problem = str(exc)
            log.warning("no TLS: %s", exc)
        return cls(
            config,
            pipeline,
            store,
            executor,
            env,
            f"{controls.me}:{os.getpid()}",
            shared,
            tls,
            problem,
            (config.home.control / "tlsclients").exists(),
        )
