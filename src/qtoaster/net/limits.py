"""Connection limits of one worker process and the open files they need.

N workers serve the same listeners on their own SO_REUSEPORT sockets and share nothing,
so a limit on the whole server is kept as a per-worker share: each worker holds at most
``ceil(limit / N)`` connections (as Postfix's process limits count per process). The
per-address limit is counted by each worker on its own (docs/configuration.md), under
:func:`client_key`: an IPv6 client's whole /64 counts as one address (RFC 4291 2.5.4: the
interface identifier is the client's to choose, so per /128 a host would have no limit),
as auth/throttle.py counts login failures.

Each connection needs open files (its socket; a spool file or a scanner's socket while
DATA runs), so at start the worker raises its soft RLIMIT_NOFILE up to what its share
needs, never past the hard limit. When the hard limit is lower, the share is cut to what
fits and the one error line says so, naming both numbers: connections beyond it then get
the role's refusal instead of a failed accept.

Invariant: :func:`fit_connections` never returns more connections than the soft
open-file limit holds (with RESERVED_FDS kept for the process), nor less than 1.
"""

from __future__ import annotations

import logging
import resource
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from qtoaster.core.literal import client_key

FDS_PER_CONNECTION = 2  # the socket, and a spool file or a scanner's socket during DATA
RESERVED_FDS = 64  # listeners, log, database, thread pools, QMAILQUEUE pipes, a refusal


class Refusal(Protocol):
    def __call__(self, kind: str, per_ip: bool) -> bytes: ...


def _never(ip: str) -> bool:
    return False


@dataclass(frozen=True, slots=True)
class Limits:
    """What one worker admits: ``total`` connections, ``per_ip`` from one address (an IPv6
    /64: :func:`client_key`) unless ``exempt(ip)`` (asked, with the client's own address,
    only once its key is at the limit); an excess connection gets
    ``refusal(kind, per_ip)`` written (b"": nothing) and is closed."""

    total: int
    per_ip: int
    refusal: Refusal
    exempt: Callable[[str], bool] = _never


def worker_share(limit: int, workers: int) -> int:
    """One worker's share of a limit on all ``workers`` (rounded up, at least 1)."""
    return max(1, -(-limit // max(1, workers)))


def raise_open_files(need: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards ``need`` (never past the hard limit, never
    lower); the soft limit it is now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return need if soft == resource.RLIM_INFINITY else soft
    target = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
        return target
    return soft


def fit_connections(
    max_connections: int, workers: int, log: logging.Logger, setting: str = "max_connections"
) -> int:
    """This worker's share of ``max_connections``, with the open files it needs; cut to
    what the hard open-file limit allows (logged once per call, naming both numbers)."""
    share = worker_share(max_connections, workers)
    need = share * FDS_PER_CONNECTION + RESERVED_FDS
    have = raise_open_files(need)
    if have >= need:
        return share
    fitted = max(1, (have - RESERVED_FDS) // FDS_PER_CONNECTION)
    log.error(
        "net open-file limit (RLIMIT_NOFILE) is %d, below the %d that %d connections per worker "
        "need (%s %d over %d workers): serving at most %d connections per worker; raise "
        "the hard limit (ulimit -Hn, systemd LimitNOFILE=) or lower %s",
        have,
        need,
        share,
        setting,
        max_connections,
        workers,
        fitted,
        setting,
    )
    return fitted


__all__ = ["Limits", "client_key", "fit_connections", "raise_open_files", "worker_share"]
