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

Invariants: every method is O(1) and thread-safe; time comes only from ``clock``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from qtoaster.core.literal import client_key

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


class ThrottleSettings(Protocol):
    """What the throttle reads of qtoaster.config.settings.Settings."""

    @property
    def auth_failure_delay(self) -> float: ...
    @property
    def auth_max_failures(self) -> int: ...


class LoginThrottle:
    """Failed logins per client IP (and per account), shared by SMTP and POP3 in one process.

    Each failure from an address adds delay to that address's next answer (1 s, 2 s, 4 s ...
    capped at 30 s) across connections, forgotten after a quiet period; a session closes
    after ``session_failures`` failures (default 3). Bounded memory (LRU of at most
    ``max_entries`` addresses, and as many accounts).
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
    ) -> None:
        if not 0 <= base <= cap:
            raise ValueError(f"need 0 <= base <= cap, got base={base} cap={cap}")
        if forget_after <= 0 or max_entries < 1 or session_failures < 1:
            raise ValueError("forget_after, max_entries and session_failures must be positive")
        self._clock = clock
        self._base = base
        self._cap = cap
        self.session_failures = session_failures
        self._ips = _Counts(max_entries, forget_after)
        self._accounts = _Counts(max_entries, forget_after)
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: ThrottleSettings) -> LoginThrottle:
        """The throttle of ``[auth] failure_delay`` and ``max_failures``."""
        return cls(base=settings.auth_failure_delay, session_failures=settings.auth_max_failures)

    def update(self, settings: ThrottleSettings) -> None:
        """New settings (SIGHUP) without forgetting the failures counted so far: a reload
        must not give an attacker a clean slate."""
        fresh = self.from_settings(settings)  # validates them
        with self._lock:
            self._base, self.session_failures = fresh._base, fresh.session_failures

    def delay_for(self, ip: str, account: str | None = None) -> float:
        """Seconds to wait before answering this address's (and account's) next AUTH result."""
        with self._lock:
            now = self._clock()
            failures = self._ips.current(client_key(ip), now)
            if account is not None:
                failures = max(failures, self._accounts.current(_account_key(account), now))
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
        with self._lock:
            now = self._clock()
            self._ips.add(client_key(ip), now)
            if account:
                self._accounts.add(_account_key(account), now)

    def succeeded(self, ip: str, account: str | None) -> None:
        """Forget the failures of ``ip`` and ``account`` (see the module docstring)."""
        with self._lock:
            self._ips.forget(client_key(ip))
            if account:
                self._accounts.forget(_account_key(account))

    def failures(self, ip: str) -> int:
        """The address's current failure count (for logs)."""
        with self._lock:
            return self._ips.current(client_key(ip), self._clock())

    def session_exhausted(self, session_failures: int) -> bool:
        """Whether a session with this many failed logins must be closed."""
        return session_failures >= self.session_failures

    def __len__(self) -> int:
        """How many addresses are remembered (bounded by ``max_entries``)."""
        return len(self._ips)


def _account_key(account: str) -> str:
    return account.lower()  # vpopmail names are case-insensitive (spec 22)
