"""The directory for long-running roles: opened lazily, surviving a database outage.

smtpd and the queue manager must start and keep serving when the database is down
(PostgreSQL on another host): chkuser then answers 4xx and deliveries are deferred,
never bounced, and the directory is opened as soon as it is back.  So it is opened on
first use, at most once every RETRY_SECONDS, and every failure is DirectoryUnavailable
(a TemporaryFailure).  Wrap it in a CachedLookups for the hot paths.

Thread-safe: lookups run in worker threads.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from qtoaster.core.errors import QtoasterError
from qtoaster.core.home import Home
from qtoaster.directory.engine import DirectoryUnavailable
from qtoaster.directory.model import Recipient, UserInfo
from qtoaster.directory.store import Directory

log = logging.getLogger("qtoaster.directory")
RETRY_SECONDS = 5.0


class LazyDirectory:
    def __init__(self, home: Home, url: str | None) -> None:
        self._home = home
        self._url = url
        self._lock = threading.Lock()
        self._directory: Directory | None = None
        self._failed_at = -RETRY_SECONDS

    def hosts_domain(self, name: str) -> bool:
        return self._open().hosts_domain(name)

    def find_mailbox(self, address: str) -> Path | None:
        return self._open().find_mailbox(address)

    def resolve(self, address: str) -> Recipient | None:
        return self._open().resolve(address)

    def change_token(self) -> int | None:
        return self._open().change_token()

    def verify_password(self, address: str, password: str) -> bool:
        return self._open().verify_password(address, password)

    def auth_secrets(self, address: str) -> tuple[str | None, str | None]:
        return self._open().auth_secrets(address)

    def user(self, address: str) -> UserInfo | None:
        return self._open().user(address)

    def secrets_everywhere(self) -> bool:
        return self._open().secrets_everywhere()

    def close(self) -> None:
        with self._lock:
            if self._directory is not None:
                self._directory.close()
            self._directory = None

    def _open(self) -> Directory:
        directory = self._directory
        if directory is not None:
            return directory
        with self._lock:
            if self._directory is not None:
                return self._directory
            if time.monotonic() - self._failed_at < RETRY_SECONDS:
                raise DirectoryUnavailable("directory unavailable (retrying shortly)")
            try:
                self._directory = Directory.open(self._home, self._url)
            except QtoasterError as exc:
                self._failed_at = time.monotonic()
                log.warning("cannot open the directory: %s", exc)
                raise DirectoryUnavailable(str(exc)) from exc
            return self._directory
