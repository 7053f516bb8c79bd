"""The login throttle: failed AUTH / POP3 logins slow down later answers to the same client.

qmail-smtpd sleeps a fixed 5 seconds before every ``535`` (spec 6.2) and qmail-popup closes
the connection after one failure (spec 19.2); neither remembers anything across connections,
so a client that opens many connections guesses at full speed. One :class:`LoginThrottle`
in the auth role (qtoaster.authd, decision 0007) counts failures per client address and
per account across connections and across every smtpd and pop3d worker.

How the auth role uses it, for one AUTH / PASS / APOP answer::

    result = verify(...)                      # off the event loop (argon2)
    if result.ok:
        wait = throttle.success_delay(ip)
        throttle.succeeded(ip, account)
    else:
        throttle.failed(ip, account)
        wait = throttle.delay_for(ip, account)
    await asyncio.sleep(wait)                 # then answer the worker: 235 / 535, +OK / -ERR

With n recent failures the answer waits ``min(cap, base * 2**(n-1))`` (1, 2, 4 ... 30 s by
default). A failure is counted before its own answer, so every failure reply waits at least
``base``: ``base=QMAIL_FAILURE_DELAY`` gives qmail's fixed 5 s on the first failure; the
default is 1 s, because the growing delay does the real work and a typo should cost little.
The rule for whom a delay hits:
- a failure waits for the address's and the account's failures, whichever are more: a
  guess at an account is slowed from any address (a distributed attack on one account);
- a success waits only for its address's failures: the real owner logging in from an
  address without failures is answered at once while its account is under attack
  (before issue 13 the account's count delayed the owner too); from an address that
  failed, a success waits like the next failure, so a guesser gains nothing by dropping
  the connection early to tell a fast success from a slow failure;
- the auth role also caps the attempts in flight per address (authd.server), so waiting
  cannot be skipped by opening more connections: an attacker's guesses from one address
  come at most ``in_flight`` per delay.

Choices:
- IPv6 clients are counted per /64 (RFC 4291 2.5.4: the interface identifier is the
  client's to choose, so a /128 costs an attacker nothing); IPv4-mapped IPv6 as IPv4.
- Counts are forgotten after ``forget_after`` seconds without a failure.
- A success forgets the address's and the account's failures: behind a NAT the other users
  keep their speed. The price: an attacker who holds one valid account can reset its own
  address; the per-account count still slows guessing at any one account.
- Memory is bounded: each table keeps the ``max_entries`` most recently touched keys.

Where the counts live (a :class:`FailureStore`): in memory by default, one throttle per
host; with a PostgreSQL directory the auth role keeps them in a table that every host's
auth role shares (qtoaster.directory.loginfailures), so failures made on one host slow
the next attempt on another (docs/cluster.md). The delay rule is the same for both.

Invariants: every method is thread-safe; in memory every one is O(1) and time comes only
from ``clock``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from qtoaster.core.literal import client_key

IP, ACCOUNT = "ip", "account"
KINDS = (IP, ACCOUNT)
QMAIL_FAILURE_DELAY = 5.0
"""qmail-smtpd's sleep before ``535 authentication failed`` (spec 6.2): pass as ``base``."""


@dataclass(slots=True)
class _Record:
    failures: int
    last: float  # clock time of the latest failure


class _Counts:
    """Failure counts per key, the least recently touched dropped beyond ``max_entries``."""

    def __init__(self, max_entries: int, forget_after: float) -> None:
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self._max = max_entries
        self._forget_after = forget_after

    def __len__(self) -> int:
        return len(self._records)

    def current(self, key: str, now: float) -> int:
        record = self._records.get(key)
        if record is None:
            return 0
        if now - record.last >= self._forget_after:
            del self._records[key]
            return 0
        return record.failures

    def add(self, key: str, now: float) -> None:
        failures = self.current(key, now) + 1
        self._records[key] = _Record(failures, now)
        self._records.move_to_end(key)
        while len(self._records) > self._max:
            self._records.popitem(last=False)

    def forget(self, key: str) -> None:
        self._records.pop(key, None)


class FailureStore(Protocol):
    """Where the failure counts live: :class:`MemoryFailures` in the auth role (one host),
    or a table every host's auth role shares (qtoaster.directory.loginfailures, on
    PostgreSQL: docs/cluster.md). ``kind`` is ``"ip"`` or ``"account"``; a count not
    touched for the store's ``forget_after`` seconds reads 0. May raise TemporaryFailure."""

    def current(self, kind: str, key: str) -> int: ...
    def add(self, kind: str, key: str) -> None: ...
    def forget(self, kind: str, key: str) -> None: ...
    def __len__(self) -> int: ...


class MemoryFailures:
    """The counts in this process: an LRU of at most ``max_entries`` keys of each kind."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        forget_after: float = 900.0,
        max_entries: int = 100_000,
    ) -> None:
        if forget_after <= 0 or max_entries < 1:
            raise ValueError("forget_after and max_entries must be positive")
        self._clock = clock
        self._tables = {kind: _Counts(max_entries, forget_after) for kind in KINDS}
        self._lock = threading.Lock()

    def current(self, kind: str, key: str) -> int:
        with self._lock:
            return self._tables[kind].current(key, self._clock())

    def add(self, kind: str, key: str) -> None:
        with self._lock:
            self._tables[kind].add(key, self._clock())

    def forget(self, kind: str, key: str) -> None:
        with self._lock:
            self._tables[kind].forget(key)

    def __len__(self) -> int:
        """How many addresses are remembered."""
        return len(self._tables[IP])


class ThrottleSettings(Protocol):
    """What the throttle reads of qtoaster.config.settings.Settings."""

    @property
    def auth_failure_delay(self) -> float: ...
    @property
    def auth_max_failures(self) -> int: ...


class LoginThrottle:
    """Failed logins per client IP (and per account), shared by SMTP and POP3 in one process
    (and by every host, with a shared :class:`FailureStore`).

    Each failure from an address adds delay to that address's next answer (1 s, 2 s, 4 s ...
    capped at 30 s) across connections, forgotten after a quiet period; a session closes
    after ``session_failures`` failures (default 3). Bounded memory (LRU of at most
    ``max_entries`` addresses, and as many accounts) with the default in-memory store.
    With a shared store every method may block on the database and raise TemporaryFailure:
    call them off the event loop.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        base: float = 1.0,
        cap: float = 30.0,
        forget_after: float = 900.0,
        max_entries: int = 100_000,
        session_failures: int = 3,
        store: FailureStore | None = None,
    ) -> None:
        if not 0 <= base <= cap:
            raise ValueError(f"need 0 <= base <= cap, got base={base} cap={cap}")
        if session_failures < 1:
            raise ValueError("session_failures must be positive")
        self._base = base
        self._cap = cap
        self.session_failures = session_failures
        if store is None:
            store = MemoryFailures(clock=clock, forget_after=forget_after, max_entries=max_entries)
        self.store = store

    @classmethod
    def from_settings(
        cls, settings: ThrottleSettings, store: FailureStore | None = None
    ) -> LoginThrottle:
        """The throttle of ``[auth] failure_delay`` and ``max_failures`` (counts in ``store``,
        by default in memory)."""
        return cls(
            base=settings.auth_failure_delay,
            session_failures=settings.auth_max_failures,
            store=store,
        )

    def update(self, settings: ThrottleSettings) -> None:
        """New settings (SIGHUP) without forgetting the failures counted so far: a reload
        must not give an attacker a clean slate."""
        fresh = self.from_settings(settings, self.store)  # validates them
        self._base, self.session_failures = fresh._base, fresh.session_failures

    def delay_for(self, ip: str, account: str | None = None) -> float:
        """Seconds to wait before answering this address's (and account's) next AUTH result."""
        failures = self.store.current(IP, client_key(ip))
        if account is not None:
            failures = max(failures, self.store.current(ACCOUNT, _account_key(account)))
        if failures == 0:
            return 0.0
        # 2**62 is far past any cap; the bound keeps the float finite for huge counts.
        return min(self._cap, self._base * 2.0 ** min(failures - 1, 62))

    def success_delay(self, ip: str) -> float:
        """Seconds a correct login from ``ip`` waits: only the address's failures count (the
        account's do not delay its owner; see the module docstring)."""
        return self.delay_for(ip)

    def failed(self, ip: str, account: str | None) -> None:
        """Count a failed login from ``ip`` (and against ``account``, if one was named)."""
        self.store.add(IP, client_key(ip))
        if account:
            self.store.add(ACCOUNT, _account_key(account))

    def succeeded(self, ip: str, account: str | None) -> None:
        """Forget the failures of ``ip`` and ``account`` (see the module docstring)."""
        self.store.forget(IP, client_key(ip))
        if account:
            self.store.forget(ACCOUNT, _account_key(account))

    def failures(self, ip: str) -> int:
        """The address's current failure count (for logs)."""
        return self.store.current(IP, client_key(ip))

    def session_exhausted(self, session_failures: int) -> bool:
        """Whether a session with this many failed logins must be closed."""
        return session_failures >= self.session_failures

    def __len__(self) -> int:
        """How many addresses are remembered (bounded by ``max_entries`` in memory)."""
        return len(self.store)


def _account_key(account: str) -> str:
    return account.lower()  # vpopmail names are case-insensitive (spec 22)
