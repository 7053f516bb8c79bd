"""SPF (RFC 7208) on the MAIL FROM identity and the HELO identity, with pyspf.

pyspf looks names up through a module-level function (``spf.DNSLookup``); it is set once
to a dispatcher that calls the lookup function of the current thread, so every check
(and every RFC 7208 test case) brings its own DNS without touching another thread's.

Results are RFC 7208's: pass, fail, softfail, neutral, none, permerror, temperror.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import spf as pyspf

# pyspf's lookup: (name, qtype, strict, timeout) -> ((name, qtype), value) pairs
SpfLookup = Callable[..., Iterable[tuple[tuple[str, str], Any]]]

_current = threading.local()


def _dispatch(name: str, qtype: str, strict: object = True, timeout: object = None) -> Any:
    lookup: SpfLookup | None = getattr(_current, "lookup", None)
    if lookup is None:
        raise pyspf.TempError("DNS: no lookup function in this thread")
    try:
        return list(lookup(name, qtype, strict, timeout))
    except pyspf.TempError:
        raise
    except Exception as exc:  # DnsTemporary and anything else: temporary, never "none"
        raise pyspf.TempError(f"DNS {exc}") from None


pyspf.DNSLookup = _dispatch


@dataclass(frozen=True, slots=True)
class SpfResult:
    result: str  # pass, fail, softfail, neutral, none, permerror, temperror
    identity: str  # the address (mailfrom) or name (helo) checked
    explanation: str = ""

    @property
    def domain(self) -> str:
        return self.identity.rpartition("@")[2].lower()


def spf_query(
    ip: str,
    sender: str,
    helo: str,
    lookup: SpfLookup,
    *,
    strict: bool = True,
    default_explanation: str | None = None,
) -> tuple[str, str]:
    """pyspf's check of one identity: (result, explanation).  An empty sender checks
    ``postmaster@helo`` (RFC 7208 section 2.4)."""
    _current.lookup = lookup
    try:
        query = pyspf.query(i=ip, s=sender, h=helo, strict=strict)
        if default_explanation is not None:
            query.set_default_explanation(default_explanation)
        result, _code, explanation = query.check()
    finally:
        _current.lookup = None
    result = {"unknown": "permerror", "error": "temperror"}.get(result, result)
    return result, explanation or ""


def check_mailfrom(ip: str, sender: str, helo: str, lookup: SpfLookup) -> SpfResult:
    identity = sender if sender else f"postmaster@{helo}"
    result, explanation = spf_query(ip, sender, helo, lookup)
    return SpfResult(result, identity, explanation)


def check_helo(ip: str, helo: str, lookup: SpfLookup) -> SpfResult:
    """The HELO identity (RFC 7208 section 2.3): none for an address literal or a name
    that is not a domain."""
    if not helo or helo.startswith("[") or "." not in helo:
        return SpfResult("none", helo)
    result, explanation = spf_query(ip, f"postmaster@{helo}", helo, lookup)
    return SpfResult(result, helo, explanation)
