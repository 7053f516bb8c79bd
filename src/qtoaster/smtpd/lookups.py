"""The directory as smtpd sees it: cached lookups that survive a database outage.

A worker must start and keep serving when the database is down (PostgreSQL on another
host): recipients of hosted domains then get a 4xx from chkuser, never a 5xx, and the
worker opens the directory as soon as it is back.  So the directory is opened lazily,
at most once every RETRY_SECONDS, and every failure is a TemporaryFailure.

Thread-safe: lookups run in the worker's lookup threads.
"""

from __future__ import annotations

import logging
import threading
import time

from qtoaster.core.errors import QtoasterError, TemporaryFailure
from qtoaster.core.home import Home
from qtoaster.directory.cache import MISS, CachedLookups
from qtoaster.directory.model import Recipient
from qtoaster.directory.store import Directory

log = logging.getLogger("qtoaster.smtpd")
RETRY_SECONDS = 5.0


class DirectoryUnreachable(TemporaryFailure):
    """The directory could not be opened (recently): answer 4xx."""


class SmtpdLookups:
    def __init__(self, home: Home, url: str | None) -> None:
        self._home = home
        self._url = url
        self._lock = threading.Lock()
        self._directory: Directory | None = None
        self._cached: CachedLookups | None = None
        self._failed_at = -RETRY_SECONDS

    def peek(self, address: str) -> Recipient | object | None:
        cached = self._cached
        return MISS if cached is None else cached.peek(address)

    def resolve(self, address: str) -> Recipient | None:
        return self._open().resolve(address)

    def close(self) -> None:
        with self._lock:
            if self._directory is not None:
                self._directory.close()
            self._directory = self._cached = None

    def _open(self) -> CachedLookups:
        cached = self._cached
        if cached is not None:
            return cached
        with self._lock:
            if self._cached is not None:
                return self._cached
            if time.monotonic() - self._failed_at < RETRY_SECONDS:
                raise DirectoryUnreachable("directory unavailable (retrying shortly)")
            try:
                self._directory = Directory.open(self._home, self._url)
            except QtoasterError as exc:
                self._failed_at = time.monotonic()
                log.warning("cannot open the directory: %s", exc)
                raise DirectoryUnreachable(str(exc)) from exc
            self._cached = CachedLookups(self._directory)
            return self._cached
