"""What pop3d sessions of one worker share; rebuilt on SIGHUP (certificates, settings)."""

from __future__ import annotations

import logging
import ssl
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

from qtoaster.auth.client import AuthClient
from qtoaster.config.loader import Config
from qtoaster.directory.lazy import LazyDirectory
from qtoaster.tls.server import reader_context

log = logging.getLogger("qtoaster.pop3d")


@dataclass(frozen=True, slots=True)
class Pop3Context:
    config: Config
    directory: LazyDirectory  # credentials only through ``auth``, Maildirs through ``broker``
    executor: Executor
    auth: AuthClient  # logins are checked (and throttled) by the auth role
    secrets: list[bool]  # [APOP/CRAM-MD5 can be offered], polled from the auth role
    tls: ssl.SSLContext | None
    tls_problem: str
    broker: Path  # the mailbox broker's socket: pop3d reads no Maildir itself

    @classmethod
    def build(
        cls,
        config: Config,
        directory: LazyDirectory,
        executor: Executor,
        auth: AuthClient,
        secrets: list[bool],
        broker: Path,
    ) -> Pop3Context:
        tls, problem = reader_context(
            config.home.control, min_version=config.settings.tls_min_version, log=log
        )
        return cls(config, directory, executor, auth, secrets, tls, problem, broker)
