"""The origin word of a queued message (the header line of ``queue/mess/ID``, docs/queue.md)
and the one predicate over it: :func:`trusted`.

Origins written: ``smtp IP`` (an SMTP client we relay nothing for), followed by flag words:
``relay`` (a session that authenticated with SMTP AUTH or had RELAYCLIENT set: one of our
users) and ``requiretls`` (MAIL FROM had REQUIRETLS, RFC 8689: remote delivery obeys it),
e.g. ``smtp 192.0.2.1 relay requiretls``, and ``binarymime`` (MAIL FROM had BODY=BINARYMIME,
RFC 3030 3: never relayed by DATA, send/remotelane.py bounces it);
``inject uid N`` (``queue-inject``), ``sendmail uid N``, ``bounce`` (our own bounces),
``vacation`` (a user's autoresponder reply, docs/vacation.md) and ``forward`` (a
``.qmail``/alias forward of mail that came from elsewhere).

Invariant: :func:`trusted` is the only place that decides whether a message is our users'
own mail (the send role signs it with DKIM, docs/dkim.md) and :func:`origin_flags` the only
reader of the flag words; readers that only show the origin (``qtoaster queue``, the send
log) treat it as text.
"""

from __future__ import annotations

RELAY = "relay"
REQUIRETLS = "requiretls"
BINARYMIME = "binarymime"
VACATION = "vacation"
_LOCAL = frozenset(("inject", "sendmail", "bounce", VACATION))


def smtp_origin(ip: str, relay: bool, requiretls: bool = False, binarymime: bool = False) -> str:
    """What smtpd writes: ``smtp IP``, with ``relay`` for an authenticated or relaying
    session, ``requiretls`` for a message sent with REQUIRETLS and ``binarymime`` for one
    sent with BODY=BINARYMIME."""
    flags = (RELAY,) * relay + (REQUIRETLS,) * requiretls + (BINARYMIME,) * binarymime
    return with_flags(f"smtp {ip}", flags)


def with_flags(origin: str, flags: tuple[str, ...]) -> str:
    """*origin* (``smtp IP``) with flag words after it: ``smtp 192.0.2.1 requiretls``."""
    return " ".join((origin, *flags)) if flags else origin


def origin_flags(origin: str) -> frozenset[str]:
    """The flag words of an smtpd origin (``smtp IP FLAG...``); none for other origins."""
    words = origin.split()
    return frozenset(words[2:]) if len(words) > 2 and words[0] == "smtp" else frozenset()


def trusted(origin: str) -> bool:
    """Our users' mail: an SMTP session marked ``relay``, an injection, our bounce or a
    user's vacation reply."""
    words = origin.split()
    if not words:
        return False
    if words[0] == "smtp":
        return RELAY in origin_flags(origin)
    return words[0] in _LOCAL
