"""What a Maildir++ file name says: ``<unique>[,S=<size>][:2,<flags>]`` (spec 19.5, 21.2).

The unique part (POP3's UIDL), the size that Maildir++ writers record (``,S=``, the last
one before the info) and the flags of the info (``:2,`` then capitals in ASCII order:
D draft, F flagged, P passed, R replied, S seen, T trashed).  Quota, the POP3 snapshot
and, later, IMAP read names here and nowhere else.

Invariant: pure functions over ``str``; they accept any name (a name without ``,S=`` or
info has no size and no flags) and never raise.
"""

from __future__ import annotations

import re

INFO = ":2,"  # the Maildir info of a message in cur/ (flags follow)
_CAPITALS = re.compile(r"[A-Z]*")
_DIGITS = re.compile(r"[0-9]*", re.ASCII)


def unique(name: str) -> str:
    """The name without its info: what POP3's UIDL shows (spec 19.5)."""
    return name.partition(":")[0]


def size_digits(name: str) -> str | None:
    """The digits after the last ``,S=`` before the info (possibly ""), None without one.

    Callers differ on ``,S=`` followed by no digit: Courier's ``maildir_parsequota``
    counts 0 (quota), qmail-pop3d the file's size (POP3); each decides.
    """
    base = name.split(":", 1)[0]
    at = base.rfind(",S=")
    if at < 0:
        return None
    digits = _DIGITS.match(base, at + 3)
    return digits[0] if digits else ""


def flags(name: str) -> str:
    """The run of capitals after the first ``:2,`` (Courier's rule); "" without an info."""
    _, sep, info = name.partition(INFO)
    if not sep:
        return ""
    found = _CAPITALS.match(info)
    return found[0] if found else ""


def wire_size_of(data: bytes) -> int:
    """RFC822.SIZE of a message stored as ``data`` (mailbox.wire_size's rule): every LF
    counted as CRLF, a missing last line end added."""
    size = len(data) + data.count(b"\n") - data.count(b"\r\n")
    if data.endswith(b"\r"):
        return size + 1
    if data and not data.endswith(b"\n"):
        return size + 2
    return size


def name_field(name: str, letter: str) -> int | None:
    """The number after the last ``,<letter>=`` before the info (``S=`` size on disk,
    ``W=`` wire size, as Dovecot names them)."""
    base = name.partition(":")[0]
    at = base.rfind(f",{letter}=")
    if at < 0:
        return None
    digits = base[at + 3 :].partition(",")[0]
    return int(digits) if digits.isdigit() and len(digits) < 19 else None
