"""What the directory hands out (plain frozen values) and the rules for names it accepts.

Invariants:
- every name that reaches the database went through :func:`valid_domain`,
  :func:`valid_address` or :func:`valid_target` and is lower-cased (local parts too:
  vpopmail is case-insensitive, spec 22); a domain is stored as its IDNA A-labels
  (``core/domain.domain_key``) and a UTF-8 local part in NFC (``local_key``), so either
  spelling of a name finds it (decision 0021);
- the values are immutable, so caches can share them between threads.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from qtoaster.core.domain import domain_key, local_key
from qtoaster.core.envelope import split_address
from qtoaster.core.errors import QtoasterError
from qtoaster.directory.schema import UNKNOWN_BOUNCE, UNKNOWN_DELETE, UserFlag

# RFC 1035 2.3.1 labels (letters, digits, inner hyphens), at most 63 octets each, 253 in all.
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
# RFC 5322 3.2.3 atext and dots, minus '/' (the local part names a directory on disk).
_LOCAL = re.compile(r"^[a-z0-9!#$%&'*+=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+=?^_`{|}~-]+)*$")
# RFC 6532 3.2 allows any UTF-8 in a local part; a hosted mailbox takes only letters,
# marks and digits beyond ASCII, never a space, a format character (bidi overrides,
# zero-width joiners), a symbol or a control: the name is also a directory name people
# read and type (decision 0021).
_UTF8_LOCAL_CATEGORIES = frozenset("LMN")


def _local_ok(local: str) -> bool:
    if not local.isascii():
        local = "".join(
            c
            if c.isascii()
            else "a"
            if unicodedata.category(c)[0] in _UTF8_LOCAL_CATEGORIES
            else " "
            for c in local
        )
    return _LOCAL.match(local) is not None


class DirectoryError(QtoasterError):
    """A directory request that cannot succeed: unknown or duplicate name, invalid address."""


@dataclass(frozen=True, slots=True)
class UserInfo:
    address: str
    domain: str
    local_part: str
    quota: int | None  # bytes (Maildir++ 'S'); None = unlimited
    flags: UserFlag
    maildir: Path  # absolute
    has_password: bool
    created: int  # Unix seconds
    quota_messages: int | None = None  # Maildir++ 'C'; None = unlimited
    secrets: bool | None = None  # keeps CRAM-MD5/APOP secrets; None = the domain's choice
    has_secrets: bool = False  # CRAM-MD5/APOP secrets are stored now
    junk_spam: bool = False  # mail the spam scanner marked goes to .Junk (docs/vacation.md)


DAY = 86400
VACATION_PERIOD = 7 * DAY  # vacation(1)'s default: one reply per sender a week
PERIOD_RANGE = (60, 365 * DAY)
SUBJECT_MAX = 255
BODY_MAX = 64 * 1024  # characters


@dataclass(frozen=True, slots=True)
class Vacation:
    """A user's autoresponder (qmailadmin's vacation; docs/vacation.md).

    ``subject`` "" means "Auto: " and the subject of the message answered (RFC 3834
    3.1.5); ``starts``/``ends`` are Unix seconds (``ends`` exclusive), None for no bound;
    ``period``: seconds before the same sender gets another reply."""

    enabled: bool
    subject: str
    body: str
    starts: int | None = None
    ends: int | None = None
    period: int = VACATION_PERIOD

    def active(self, now: float) -> bool:
        """Whether it answers mail arriving at ``now``."""
        if not self.enabled:
            return False
        if self.starts is not None and now < self.starts:
            return False
        return self.ends is None or now < self.ends


def valid_vacation(vacation: Vacation) -> Vacation:
    """``vacation`` if it can be stored and sent, else DirectoryError saying why."""
    low, high = PERIOD_RANGE
    if not low <= vacation.period <= high:
        raise DirectoryError(f"invalid period {vacation.period}s: from {low}s to {high // DAY}d")
    if len(vacation.subject) > SUBJECT_MAX or any(c in vacation.subject for c in "\r\n\x00"):
        raise DirectoryError(f"invalid subject: one line of at most {SUBJECT_MAX} characters")
    if len(vacation.body) > BODY_MAX or "\x00" in vacation.body:
        raise DirectoryError(f"invalid message: at most {BODY_MAX} characters, no NUL")
    if vacation.enabled and not vacation.body.strip():
        raise DirectoryError("the vacation message is empty")
    starts, ends = vacation.starts, vacation.ends
    if starts is not None and ends is not None and ends <= starts:
        raise DirectoryError("the vacation ends before it starts")
    return vacation


@dataclass(frozen=True, slots=True)
class DomainInfo:
    name: str
    alias_of: str | None  # the real domain of an alias domain
    default_quota: int | None
    max_users: int | None
    unknown_user: str  # 'bounce', 'delete' or a catch-all address
    secrets: bool
    users: int
    aliases: int
    alias_domains: tuple[str, ...]
    created: int


@dataclass(frozen=True, slots=True)
class AliasInfo:
    address: str
    target: str
    keep_copy: bool


@dataclass(frozen=True, slots=True)
class Recipient:
    """Everything delivery and chkuser need to know about one address of a hosted domain."""

    domain: str  # the real domain (an alias domain resolved to its target)
    local_part: str  # lower-cased, as asked
    user: UserInfo | None  # the mailbox (after the user-ext fallback); None if none
    forwards: tuple[str, ...]  # alias targets of exactly this address
    keep_copy: bool  # with forwards: also deliver to ``user``
    unknown_user: str  # the domain's handling of addresses that have neither
    vacation: Vacation | None = None  # the user's autoresponder setting, if it has one

    @property
    def exists(self) -> bool:
        """An address that accepts mail by itself (chkuser's "user or alias", spec 12.2)."""
        mailbox = self.user is not None and not self.user.flags & UserFlag.BOUNCE_MAIL
        return mailbox or bool(self.forwards)


def valid_domain(name: str) -> str:
    """``name`` lower-cased with U-labels as A-labels (``bücher.example`` is stored as
    ``xn--bcher-kva.example``), or DirectoryError if it is not a DNS host name."""
    lowered = domain_key(name)
    labels = lowered.split(".")
    if len(lowered) > 253 or not all(_LABEL.match(label) for label in labels):
        raise DirectoryError(f"invalid domain name: {name!r}")
    return lowered


def valid_address(address: str) -> tuple[str, str]:
    """``(local, domain)`` lower-cased, or DirectoryError if not a mailbox address."""
    local, domain = split_address(address)
    _missing_part(address)
    lowered = local_key(local)
    too_long = len(lowered.encode("utf-8", "surrogateescape")) > 64  # octets, RFC 5321 4.5.3.1.1
    if "@" not in address or too_long or not _local_ok(lowered):
        raise DirectoryError(f"invalid address: {address!r}")
    return lowered, valid_domain(domain)


def _missing_part(address: str) -> None:
    """A clear DirectoryError for ``alice@`` or ``@example.com`` (an empty domain was
    reported as "invalid domain name: ''", which names no address)."""
    local, at, domain = address.rpartition("@")
    if at and not domain:
        raise DirectoryError(f"invalid address {address!r}: the domain is missing")
    if at and not local:
        raise DirectoryError(f"invalid address {address!r}: the local part is missing")


def valid_target(target: str) -> str:
    """A forward target: a mailbox address (lower-cased domain) or an absolute Maildir path
    (ending in ``/``, as in a .qmail file, spec 16.3)."""
    if len(target) > 320 or "\x00" in target:
        raise DirectoryError(f"invalid forward target: {target[:40]!r}... (too long or NUL)")
    if target.startswith("/"):
        if not target.endswith("/") or "\n" in target:
            raise DirectoryError(f"invalid Maildir target {target!r} (absolute, ending in /)")
        return target
    local, domain = split_address(target)
    _missing_part(target)
    if "@" not in target or not local or any(c in target for c in " \t\r\n<>"):
        raise DirectoryError(f"invalid forward address: {target!r}")
    return f"{local}@{valid_domain(domain)}"


def valid_unknown_user(action: str) -> str:
    """``bounce``, ``delete`` or a catch-all address (vpopmail's .qmail-default argument;
    ``bounce-no-mailbox`` is accepted for ``bounce``)."""
    lowered = action.strip().lower()
    if lowered in (UNKNOWN_BOUNCE, "bounce-no-mailbox"):
        return UNKNOWN_BOUNCE
    if lowered == UNKNOWN_DELETE:
        return UNKNOWN_DELETE
    local, domain = valid_address(action.strip())
    return f"{local}@{domain}"
