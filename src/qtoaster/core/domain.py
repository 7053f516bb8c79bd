"""One name per domain: IDNA U-labels and A-labels are the same domain (RFC 5890, UTS 46),
and what an address needs of the next hop (RFC 6531 SMTPUTF8).

:func:`domain_key` is the one normalisation every comparison and lookup of a domain uses
(``core/envelope.split_address``, the control files' domain sets and maps, smtproutes, the
directory): ``bücher.example``, ``BÜCHER.example`` and ``xn--bcher-kva.example`` all
become ``xn--bcher-kva.example`` (a leading dot, rcpthosts' suffix form, is kept).  An
ASCII domain is only lower-cased (A-Z), exactly as before (qmail's constmap); the mapping
to A-labels is the ``idna`` package's UTS 46 processing (non-transitional), not ours.  A
name IDNA refuses (``a..b``, a label over 63 octets, a disallowed code point, bytes that
were not UTF-8) keeps its lower-cased text: it matches no A-label, so it is simply a
domain we do not host.

Invariant: every function here is pure and total on ``str`` (including the lone
surrogates that ``surrogateescape`` makes of invalid UTF-8); none raises.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Iterable

import idna

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def domain_key(domain: str) -> str:
    """The A-label form of *domain*, lower-cased; see the module docstring."""
    if domain.isascii():
        return domain.translate(_ASCII_LOWER)
    return _alabels(domain)


@functools.lru_cache(maxsize=4096)
def _alabels(domain: str) -> str:
    if not valid_utf8(domain):
        return domain.lower()
    if domain.startswith(".") and len(domain) > 1:  # rcpthosts' ".suffix" entries
        return "." + _alabels(domain[1:])
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        return domain.lower()


def domain_display(domain: str) -> str:
    """*domain* with its A-labels shown as U-labels (for people); unchanged if not IDNA."""
    if "xn--" not in domain.lower():
        return domain
    try:
        return str(idna.decode(domain, uts46=True))
    except (idna.IDNAError, UnicodeError, ValueError):
        return domain


def valid_utf8(text: str) -> bool:
    """True unless *text* holds a lone surrogate: a byte that was not UTF-8 on the wire
    (decoded with ``surrogateescape``)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def local_key(local: str) -> str:
    """A hosted mailbox's local part as the directory stores and looks it up: lower-cased
    and, when it is not ASCII, in Unicode NFC (RFC 6532 3.1: composed and decomposed
    forms are the same name)."""
    lowered = local.lower()
    if lowered.isascii() or not valid_utf8(lowered):
        return lowered
    return unicodedata.normalize("NFC", lowered)


def needs_smtputf8(addresses: Iterable[str]) -> bool:
    """Whether any of *addresses* has a non-ASCII local part: no A-label form exists for it,
    so only a next hop offering SMTPUTF8 may receive it (RFC 6531 3.2)."""
    return any(not _local_part(address).isascii() for address in addresses)


def _local_part(address: str) -> str:
    local, at, _ = address.rpartition("@")
    return local if at else address


def ascii_address(address: str) -> str:
    """*address* with its domain in A-labels (RFC 6531 3.2 allows this conversion towards
    a next hop without SMTPUTF8); the local part is kept as it is."""
    local, at, domain = address.rpartition("@")
    if not at or domain.isascii():
        return address
    key = _alabels(domain)
    return f"{local}@{key}" if key.isascii() else address
