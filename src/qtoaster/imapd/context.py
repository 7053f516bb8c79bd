"""What imapd sessions of one worker share; rebuilt on SIGHUP (certificates, settings)."""

from __future__ import annotations

import logging
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from qtoaster.auth.client import AuthClient
from qtoaster.config.imapsettings import ImapSettings
from qtoaster.config.loader import Config
from qtoaster.tls.server import reader_context

log = logging.getLogger("qtoaster.imapd")


def broker_socket(config: Config) -> Path:
    """The mailbox broker's IMAP socket (``run/mailbox/imap.sock``, mailboxd/fsserver.py):
    in the broker's directory, so only the mailbox group may connect (decision 0007)."""
    return config.home.run_dir / "mailbox" / "imap.sock"


@dataclass(frozen=True, slots=True)
class ImapContext:
    config: Config
    executor: ThreadPoolExecutor  # the store's file operations and the broker's opens
    auth: AuthClient  # logins are checked (and throttled) by the auth role
    secrets: list[bool]  # [CRAM-MD5 can be offered], polled from the auth role
    tls: ssl.SSLContext | None
    tls_problem: str
    broker: Path  # the mailbox broker's socket: imapd reads no Maildir itself

    @property
    def settings(self) -> ImapSettings:
        return self.config.settings.imapd

    @property
    def hostname(self) -> str:
        return self.config.controls.me

    @classmethod
    def build(
        cls,
        config: Config,
        executor: ThreadPoolExecutor,
        auth: AuthClient,
        secrets: list[bool],
    ) -> ImapContext:
        tls, problem = reader_context(
            config.home.control, min_version=config.settings.tls_min_version, log=log
        )
        return cls(config, executor, auth, secrets, tls, problem, broker_socket(config))
