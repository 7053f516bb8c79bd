"""Every metric qtoaster exposes, and the one call each hook point makes (docs/metrics.md).

The values live in memory unless the process was started with PROMETHEUS_MULTIPROC_DIR in
its environment (the supervisor sets it for the roles that count when ``--metrics`` or
``[listen] metrics`` is on, files.py): then prometheus_client keeps them in mmap'ed files
there, one per type and process, which the metrics role reads and adds up.  That choice is
made when prometheus_client is imported, so the variable must be set before; nothing in
this module creates a file by being imported (every metric has labels).

Invariants: each hook is one call that never raises for a value it was given (labels are
from closed sets or a check's name); a counter only goes up, and the files of a process
that died keep counting in the sum; the two queue gauges are written by the queue
manager alone, the most recent value wins (so a restarted manager's first value replaces
its predecessor's).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from prometheus_client import Counter, Gauge, Histogram

P = ParamSpec("P")
T = TypeVar("T")

LISTENERS = ("smtp", "submission", "smtps", "pop3", "pop3s", "imap", "imaps")
RESULTS = ("success", "deferral", "failure")  # core.outcome.Outcome values
CHANNELS = ("local", "remote")
AUTH_PROTOCOLS = ("smtp", "pop3", "imap")
SCANNERS = ("clamd", "spamd")

SESSIONS = Counter(
    "qtoaster_sessions",
    "Connections accepted (within the connection limits), by listener",
    ["listener"],
)
ACCEPTED = Counter(
    "qtoaster_messages_accepted",
    "Messages accepted with a 250 after DATA: committed to the queue or handed to QMAILQUEUE",
    ["via"],
)
REJECTED = Counter(
    "qtoaster_smtp_rejections",
    "SMTP commands refused by the policy pipeline, by stage and check (a RCPT refusal "
    "refuses one recipient, a DATA refusal the message)",
    ["stage", "reason"],
)
DELIVERIES = Counter(
    "qtoaster_deliveries",
    "Delivery attempts of one recipient, by result and channel",
    ["result", "channel"],
)
DELAY = Histogram(
    "qtoaster_delivery_delay_seconds",
    "Time from the queue commit to a successful delivery, per recipient",
    ["channel"],
    buckets=(0.1, 0.5, 1, 5, 30, 60, 300, 900, 3600, 4 * 3600, 86400, 7 * 86400),
)
QUEUE_MESSAGES = Gauge(
    "qtoaster_queue_messages",
    "Messages in the queue (known to the queue manager)",
    ["queue"],
    multiprocess_mode="mostrecent",
)
QUEUE_OLDEST = Gauge(
    "qtoaster_queue_oldest_message_age_seconds",
    "Age of the oldest message in the queue (0 when it is empty)",
    ["queue"],
    multiprocess_mode="mostrecent",
)
TLS = Counter(
    "qtoaster_tls_handshakes",
    "Server TLS handshakes (STARTTLS, STLS and implicit TLS), by result",
    ["result"],
)
AUTH = Counter(
    "qtoaster_auth_attempts",
    "Logins checked by the auth role (SMTP AUTH, POP3, IMAP), by protocol and result",
    ["protocol", "result"],
)
SCAN = Histogram(
    "qtoaster_scanner_duration_seconds",
    "Time one content scan took (answered or not), by scanner",
    ["scanner"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
# Every family above: docs/metrics.md lists the same (tests/metrics/test_docs.py).
FAMILIES: tuple[Counter | Gauge | Histogram, ...] = (
    SESSIONS,
    ACCEPTED,
    REJECTED,
    DELIVERIES,
    DELAY,
    QUEUE_MESSAGES,
    QUEUE_OLDEST,
    TLS,
    AUTH,
    SCAN,
)


@functools.cache
def _series(family: Counter | Gauge | Histogram, *labels: str) -> Any:
    """``family.labels(*labels)``, looked up once: ``labels()`` takes a lock and builds a
    key on every call, which was two thirds of a hook's cost (bench/metrics_hooks.py)."""
    return family.labels(*labels)


def session(listener: str) -> None:
    _series(SESSIONS, listener).inc()


def accepted(via: str = "queue") -> None:
    _series(ACCEPTED, via).inc()


def rejected(stage: str, reason: str) -> None:
    _series(REJECTED, stage, reason).inc()


def delivery(result: str, channel: str, birth: float) -> None:
    """One recipient's result; ``birth`` is the message's commit time (epoch seconds)."""
    _series(DELIVERIES, result, channel).inc()
    if result == "success":
        _series(DELAY, channel).observe(max(0.0, time.time() - birth))


def queue(messages: int, oldest_birth: float | None) -> None:
    _series(QUEUE_MESSAGES, "main").set(messages)
    age = 0.0 if oldest_birth is None else max(0.0, time.time() - oldest_birth)
    _series(QUEUE_OLDEST, "main").set(age)


def tls_handshake(ok: bool) -> None:
    _series(TLS, "success" if ok else "failure").inc()


def auth(protocol: str, ok: bool) -> None:
    _series(AUTH, protocol, "success" if ok else "failure").inc()


def timed_scan(scanner: str) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
    """Decorates a scanner client's coroutine: its duration goes to the scan histogram,
    whether it answered or raised."""

    def decorate(scan: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        @functools.wraps(scan)
        async def timed(*args: P.args, **kwargs: P.kwargs) -> T:
            started = time.monotonic()
            try:
                return await scan(*args, **kwargs)
            finally:
                _series(SCAN, scanner).observe(time.monotonic() - started)

        return timed

    return decorate


def precreate(role: str) -> None:
    """Create the series ``role`` writes, at zero, so that they are scraped from the start
    (and, under PROMETHEUS_MULTIPROC_DIR, so that its files exist now: files.py)."""
    if role in ("smtpd", "pop3d", "imapd"):
        for listener in LISTENERS:
            SESSIONS.labels(listener)
        for result in ("success", "failure"):
            TLS.labels(result)
            for protocol in AUTH_PROTOCOLS:
                AUTH.labels(protocol, result)
    if role == "smtpd":
        ACCEPTED.labels("queue")
        for scanner in SCANNERS:
            SCAN.labels(scanner)
    if role == "send":
        for channel in CHANNELS:
            DELAY.labels(channel)
            for result in RESULTS:
                DELIVERIES.labels(result, channel)
        QUEUE_MESSAGES.labels("main")  # no value yet: a predecessor's stays the most
        QUEUE_OLDEST.labels("main")  # recent until this process sets one
