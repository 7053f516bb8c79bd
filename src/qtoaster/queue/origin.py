"""The origin word of a queued message (the header line of ``queue/mess/ID``, docs/queue.md)
and the one predicate over it: :func:`trusted`.

Origins written: ``smtp IP`` (an SMTP client we relay nothing for), followed by flag words:
``relay`` (a session that authenticated with SMTP AUTH or had RELAYCLIENT set: one of our
users) and ``requiretls`` (MAIL FROM had REQUIRETLS, RFC 8689: remote delivery obeys it),
e.g. ``smtp 192.0.2.1 relay requiretls``, and ``binarymime`` (MAIL FROM had BODY=BINARYMIME,
RFC 3030 3: relayed only by BDAT, protocols/smtp/nexthop.py), and ``smtputf8`` (MAIL
FROM had SMTPUTF8, RFC 6531: remote delivery needs a next hop that offers it);
``inject uid N`` (``queue-inject``), ``sendmail uid N``, ``bounce`` (our own bounces;
``bounce smtputf8`` for the bounce of a message that had the flag, or to a UTF-8 sender:
it carries the original and goes to that address, so it needs SMTPUTF8 too), ``vacation``
(a user's autoresponder reply, docs/vacation.md) and ``forward`` (a ``.qmail``/alias
forward of mail that came from elsewhere).

Invariant: :func:`trusted` is the only place that decides whether a message is our users'
own mail (the send role signs it with DKIM, docs/dkim.md) and :func:`origin_flags` the only
reader of the flag words; readers that only show the origin (``qtoaster queue``, the send
log) treat it as text.
"""

from __future__ import annotations

from collections.abc import Iterable

from qtoaster.core.domain import needs_smtputf8

RELAY = "relay"
REQUIRETLS = "requiretls"
BINARYMIME = "binarymime"
VACATION = "vacation"
SMTPUTF8 = "smtputf8"
_LOCAL = frozenset(("inject", "sendmail", "bounce", VACATION))


def smtp_origin(
    ip: str,
    relay: bool,
    requiretls: bool = False,
    binarymime: bool = False,
    smtputf8: bool = False,
) -> str:
    """What smtpd writes: ``smtp IP``, with ``relay`` for an authenticated or relaying
    session, ``requiretls`` for a message sent with REQUIRETLS, ``binarymime`` for one
    sent with BODY=BINARYMIME and ``smtputf8`` for one sent with SMTPUTF8."""
    flags = (RELAY,) * relay + (REQUIRETLS,) * requiretls + (BINARYMIME,) * binarymime
    flags += (SMTPUTF8,) * smtputf8
    return with_flags(f"smtp {ip}", flags)


def with_flags(origin: str, flags: tuple[str, ...]) -> str:
    """*origin* (``smtp IP``) with flag words after it: ``smtp 192.0.2.1 requiretls``."""
    return " ".join((origin, *flags)) if flags else origin


def bounce_origin(original: str, recipients: Iterable[str]) -> str:
    """The origin of the bounce of a message of origin *original* sent to *recipients*:
    ``bounce``, or ``bounce smtputf8`` (module docstring)."""
    utf8 = SMTPUTF8 in origin_flags(original) or needs_smtputf8(recipients)
    return "bounce smtputf8" if utf8 else "bounce"


def origin_flags(origin: str) -> frozenset[str]:
    """The flag words of an smtpd origin (``smtp IP FLAG...``) or a bounce (``bounce
    FLAG...``); none for other origins."""
    words = origin.split()
    if words[:1] == ["bounce"]:
        return frozenset(words[1:])
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
