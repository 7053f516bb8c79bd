"""Cached directory lookups for the hot delivery path.

The queue manager asks "is this domain ours?" and "where is this mailbox?" for every
recipient; through SQLAlchemy each answer costs a few hundred microseconds.  This
cache keeps the answers (positive and negative) until the directory changes:

- on SQLite: ``Directory.change_token()`` (SQLite's data_version) moves on every
  commit from any process, and the cache is emptied when it does; the token is read
  at most every ``check_every`` seconds (a change is seen within 50 ms by default);
- elsewhere (PostgreSQL), answers expire after ``ttl`` seconds;
- after a lookup failed (TemporaryFailure: the directory was down or is being reopened,
  and a reopened directory may start its token afresh) the cache is emptied at the next
  token read, whatever the token says.

Thread-safe: deliveries run in a thread pool.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from qtoaster.core.errors import TemporaryFailure

if TYPE_CHECKING:
    from qtoaster.directory.model import Recipient

T = TypeVar("T")
_UNKNOWN: object = object()  # the token after a failure: equals no real token
MAX_ENTRIES = 100_000
MISS: object = object()  # what peek() answers when the cache does not know


class Lookups(Protocol):
    def hosts_domain(self, name: str) -> bool: ...
    def find_mailbox(self, address: str) -> Path | None: ...
    def resolve(self, address: str) -> Recipient | None: ...
    def change_token(self) -> int | None: ...


class CachedLookups:
    def __init__(
        self,
        directory: Lookups,
        *,
        ttl: float = 5.0,
        check_every: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._directory = directory
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._token: object = None
        self._since = clock()
        self._check_every = check_every
        self._checked = -check_every
        self._domains: dict[str, bool] = {}
        self._mailboxes: dict[str, Path | None] = {}
        self._recipients: dict[str, Recipient | None] = {}

    def hosts_domain(self, name: str) -> bool:
        return self._cached(self._domains, name, self._directory.hosts_domain)

    def find_mailbox(self, address: str) -> Path | None:
        return self._cached(self._mailboxes, address, self._directory.find_mailbox)

    def resolve(self, address: str) -> Recipient | None:
        return self._cached(self._recipients, address.lower(), self._directory.resolve)

    def peek(self, address: str) -> Recipient | object | None:
        """The cached :meth:`resolve` answer, or MISS; never asks the database (but may
        read the change token: raises TemporaryFailure if that fails)."""
        self._expire()
        with self._lock:
            return self._recipients.get(address.lower(), MISS)

    def _cached(self, table: dict[str, T], key: str, lookup: Callable[[str], T]) -> T:
        self._expire()
        with self._lock:
            if key in table:
                return table[key]
        try:
            value = lookup(key)
        except TemporaryFailure:
            with self._lock:
                self._token, self._checked = _UNKNOWN, -self._check_every
            raise
        with self._lock:
            if len(table) >= MAX_ENTRIES:
                table.clear()
            table[key] = value
        return value

    def _expire(self) -> None:
        now = self._clock()
        if now - self._checked < self._check_every:
            return
        self._checked = now
        token = self._directory.change_token()
        with self._lock:
            if token is not None:
                stale = token != self._token
            else:
                stale = self._token is _UNKNOWN or now - self._since > self._ttl
            if stale:
                self._token, self._since = token, now
                self._domains.clear()
                self._mailboxes.clear()
                self._recipients.clear()
