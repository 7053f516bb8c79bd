"""The origin word of a queued message (the header line of ``queue/mess/ID``, docs/queue.md)
and the one predicate over it: :func:`trusted`.

Origins written: ``smtp IP`` (an SMTP client we relay nothing for), ``smtp IP relay`` (a
session that authenticated with SMTP AUTH or had RELAYCLIENT set: one of our users),
``inject uid N`` (``queue-inject``), ``sendmail uid N``, ``bounce`` (our own bounces) and
``forward`` (a ``.qmail``/alias forward of mail that came from elsewhere).

Invariant: :func:`trusted` is the only place that decides whether a message is our users'
own mail (the send role signs it with DKIM, docs/dkim.md); readers that only show the
origin (``qtoaster queue``, the send log) treat it as text.
"""

from __future__ import annotations

RELAY = "relay"
_LOCAL = frozenset(("inject", "sendmail", "bounce"))


def smtp_origin(ip: str, relay: bool) -> str:
    """What smtpd writes: ``smtp IP``, with ``relay`` for an authenticated or relaying
    session."""
    return f"smtp {ip} {RELAY}" if relay else f"smtp {ip}"


def trusted(origin: str) -> bool:
    """Our users' mail: an SMTP session marked ``relay``, an injection, or our bounce."""
    words = origin.split()
    if not words:
        return False
    if words[0] == "smtp":
        return len(words) == 3 and words[2] == RELAY
    return words[0] in _LOCAL
