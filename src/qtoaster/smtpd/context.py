"""Everything a session needs that is shared by the sessions of one worker.

Built once from a :class:`Config` (at start and on every SIGHUP) and swapped as a
whole: a session keeps the context it started with, like a qmail-smtpd process
that read its controls when tcpserver started it (spec section 1).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass

from qtoaster.config.loader import Config
from qtoaster.directory.cache import CachedLookups
from qtoaster.policy.checks.chkuser import Chkuser, ChkuserSettings, maildir_percent
from qtoaster.policy.checks.databytes import Databytes
from qtoaster.policy.checks.rcpthosts import Rcpthosts
from qtoaster.policy.pipeline import Check, Pipeline
from qtoaster.queue.store import QueueStore

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
)


@dataclass(frozen=True, slots=True)
class SmtpdContext:
    config: Config
    pipeline: Pipeline
    store: QueueStore
    executor: Executor
    process_env: Mapping[str, str]
    hostname_pid: str

    @classmethod
    def build(
        cls,
        config: Config,
        executor: Executor,
        lookups: CachedLookups | None = None,
        lookup_executor: Executor | None = None,
    ) -> SmtpdContext:
        """The context for ``config``; without ``lookups`` there is no directory (tests
        of the protocol alone) and rcpthosts decides alone."""
        controls = config.controls
        settings = config.settings
        recipient: Check = Rcpthosts(controls)
        if lookups is not None:  # chkuser decides even when "off": CHKUSER_START may enable it
            recipient = Chkuser(
                controls,
                lookups,
                lookup_executor or executor,
                ChkuserSettings(
                    settings.chkuser_mode, settings.chkuser_delay, settings.chkuser_delay_increase
                ),
                maildir_percent(controls.me),
            )
        pipeline = Pipeline([Databytes(controls.databytes), recipient])
        store = QueueStore(config.home.queue, fsync=config.settings.fsync)
        env = {k: os.environ[k] for k in _PROCESS_VARIABLES if k in os.environ}
        return cls(config, pipeline, store, executor, env, f"{controls.me}:{os.getpid()}")
