"""What every delivery agent returns: the outcome of one recipient and qmail's report text.

The three outcomes are qmail-lspawn's report letters (spec 16.1): ``K`` success, ``Z``
temporary (the queue retries), ``D`` permanent (the queue bounces).  Invariant: an
infrastructure failure (disk, database, permissions) is TEMPORARY, never PERMANENT.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Outcome(enum.Enum):
    SUCCESS = "success"
    TEMPORARY = "deferral"
    PERMANENT = "failure"


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    report: str  # qmail's text, e.g. "Sorry, no mailbox here by that name. (#5.1.1)"
    # A success at a next hop that offered DSN and so got the DSN request: the notices are
    # its job from there on, none is ours (RFC 3461 5.2.3, send/notices.py).
    dsn: bool = False
