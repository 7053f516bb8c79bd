"""qmail-send's retry schedule and queue lifetime (spec 15.3), as pure functions.

After a temporary failure at ``now``, the next attempt is at
``birth + (isqrt(now - birth) + c)^2`` (qmail-send.c ``nextretry``), with c = 10
for local and 20 for remote deliveries: local retries at about 0, 100, 400, 900,
1600 s after birth, remote at 0, 400, 1600, 3600 s.  A message is *dying* when an
attempt starts after ``birth + queuelifetime``: that attempt is the last one and a
temporary failure becomes permanent with :data:`TOO_LONG` appended.

Invariant: the next attempt is always later than ``now`` (c >= 1), so a message can
never be retried in a tight loop.
"""

from __future__ import annotations

import math

LOCAL_SKIP = 10
REMOTE_SKIP = 20
DEFAULT_LIFETIME = 604800  # control/queuelifetime default: 7 days

TOO_LONG = "I'm not going to try again; this message has been in the queue too long.\n"


def next_retry(birth: float, now: float, skip: int = LOCAL_SKIP) -> float:
    """When to try again after a temporary failure at ``now`` (qmail-send.c nextretry)."""
    elapsed = int(now) - int(birth)
    root = math.isqrt(elapsed) if elapsed > 0 else 0
    return int(birth) + (root + skip) ** 2


def is_dying(birth: float, now: float, lifetime: int) -> bool:
    """An attempt starting at ``now`` is the last one (qmail: ``recent > birth + lifetime``)."""
    return now > birth + lifetime


def expire_report(report: str) -> str:
    """A deferral report turned permanent because the message is too old.

    qmail appends the sentence to the report, which already ends in LF; our agents'
    reports may not, so one is added first.
    """
    if report and not report.endswith("\n"):
        report += "\n"
    return report + TOO_LONG
