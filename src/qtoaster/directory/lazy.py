"""The directory for long-running roles: opened lazily, surviving a database outage.

smtpd and the queue manager must start and keep serving when the database is down
(PostgreSQL on another host): chkuser then answers 4xx and deliveries are deferred,
never bounced, and the directory is opened as soon as it is back.  So it is opened on
first use, at most once every RETRY_SECONDS, and every failure is DirectoryUnavailable
(a TemporaryFailure).  Wrap it in a CachedLookups for the hot paths.

Invariant: a database error on an open directory discards it (engine pool, SQLite page
caches, change watcher) and the next lookup opens it afresh.  A pooled SQLite connection
that read a corrupt page keeps it in its page cache (WAL mode trusts the cache while the
WAL index is unchanged), so it would answer "malformed" forever after the file was
restored; a fresh connection reads the good file.  Discarding happens at most once every
REOPEN_SECONDS per opened directory, so a burst of errors (a busy PostgreSQL pool) does
not reopen it in a loop.

Thread-safe: lookups run in worker threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from qtoaster.core.errors import QtoasterError
from qtoaster.core.home import Home
from qtoaster.directory.engine import DirectoryUnavailable
from qtoaster.directory.model import Recipient, UserInfo
from qtoaster.directory.store import Directory

log = logging.getLogger("qtoaster.directory")
RETRY_SECONDS = 5.0
REOPEN_SECONDS = 1.0  # at most one reopen after errors per this many seconds
T = TypeVar("T")


class LazyDirectory:
    def __init__(self, home: Home, url: str | None, credentials_url: str | None = None) -> None:
        self._home = home
        self._url = url
        self._credentials_url = credentials_url
        self._lock = threading.Lock()
        self._directory: Directory | None = None
        self._failed_at = -RETRY_SECONDS
        self._opened_at = 0.0

    def hosts_domain(self, name: str) -> bool:
        return self._call(lambda d: d.hosts_domain(name))

    def find_mailbox(self, address: str) -> Path | None:
        return self._call(lambda d: d.find_mailbox(address))

    def resolve(self, address: str) -> Recipient | None:
        return self._call(lambda d: d.resolve(address))

    def change_token(self) -> int | None:
        return self._call(lambda d: d.change_token())

    def verify_password(self, address: str, password: str) -> bool:
        return self._call(lambda d: d.verify_password(address, password))

    def auth_secrets(self, address: str) -> tuple[str | None, str | None]:
        return self._call(lambda d: d.auth_secrets(address))

    def user(self, address: str) -> UserInfo | None:
        return self._call(lambda d: d.user(address))

    def secrets_everywhere(self) -> bool:
        return self._call(lambda d: d.secrets_everywhere())

    def close(self) -> None:
        with self._lock:
            if self._directory is not None:
                self._directory.close()
            self._directory = None

    def _call(self, operation: Callable[[Directory], T]) -> T:
        directory = self._open()
        try:
            return operation(directory)
        except DirectoryUnavailable:
            self._discard(directory)
            raise

    def _discard(self, directory: Directory) -> None:
        """Drop ``directory`` after a database error so the next lookup reopens it."""
        with self._lock:
            if self._directory is not directory:
                return  # another thread discarded it already
            if time.monotonic() - self._opened_at < REOPEN_SECONDS:
                return
            self._directory = None
        log.warning("directory directory database error: reopening the directory")
        directory.close()

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
                self._directory = Directory.open(
                    self._home, self._url, credentials_url=self._credentials_url
                )
                self._opened_at = time.monotonic()
            except QtoasterError as exc:
                self._failed_at = time.monotonic()
                log.warning("directory cannot open the directory: %s", exc)
                raise DirectoryUnavailable(str(exc)) from exc
            return self._directory
