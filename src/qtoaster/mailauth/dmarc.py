"""DMARC (RFC 7489): the policy of the RFC5322.From domain and the message's verdict.

- The record: TXT at ``_dmarc.<From domain>``; when there is none, at ``_dmarc.`` of the
  organisational domain (the public suffix list's registrable domain; publicsuffixlist
  ships its snapshot, no network), whose ``sp=`` (else ``p=``) then applies.
- Identifier alignment (section 3.1): SPF's MAIL FROM domain (only when SPF passed) and
  every passing DKIM signature's ``d=``, strict (equal) or relaxed (same organisational
  domain) as ``aspf=``/``adkim=`` say.  One aligned pass is a DMARC pass.
- ``pct=`` (section 6.6.4): a failing message gets the policy with probability pct %;
  otherwise reject is applied as quarantine and quarantine as none.

Written here rather than taken from the ``dmarc`` package, which looks the record up
itself (its own resolver, no cache shared with SPF and DKIM, its own timeouts) and has
no way to say "the DNS gave no answer": we need every lookup through mailauth's cached
resolver and a DNS failure kept apart as temperror (a 451, never a pass).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from publicsuffixlist import PublicSuffixList

from qtoaster.mailauth.dkimverify import DkimResult
from qtoaster.mailauth.dnsquery import DnsTemporary
from qtoaster.mailauth.spf import SpfResult

POLICIES = ("none", "quarantine", "reject")

_psl: PublicSuffixList | None = None


def organizational_domain(domain: str) -> str:
    return _organizational(domain.lower().rstrip("."))


@lru_cache(maxsize=4096)
def _organizational(domain: str) -> str:
    global _psl
    if _psl is None:
        _psl = PublicSuffixList()
    return _psl.privatesuffix(domain) or domain


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    p: str
    sp: str | None = None
    pct: int = 100
    adkim: str = "r"
    aspf: str = "r"


def parse_record(text: str) -> DmarcRecord | None:
    """A DMARC record, or None when ``text`` is not a valid one (section 6.3)."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        key, sep, value = part.partition("=")
        if not sep:
            if part.strip():
                return None
            continue
        tags.setdefault(key.strip().lower(), value.strip())
    if tags.get("v") != "DMARC1" or not text.lstrip().startswith("v"):
        return None
    p = tags.get("p", "").lower()
    if p not in POLICIES:
        return None  # section 6.6.3: no valid p= → no policy (rua-only records too)
    sp = tags.get("sp", "").lower() or None
    if sp is not None and sp not in POLICIES:
        sp = None
    try:
        pct = min(100, max(0, int(tags.get("pct", "100"))))
    except ValueError:
        pct = 100
    adkim = tags.get("adkim", "r").lower()
    aspf = tags.get("aspf", "r").lower()
    return DmarcRecord(
        p, sp, pct, adkim if adkim in ("r", "s") else "r", aspf if aspf in ("r", "s") else "r"
    )


@dataclass(frozen=True, slots=True)
class DmarcResult:
    result: str  # pass, fail, none, temperror, permerror
    from_domain: str
    # the published policy that applies (p=, or sp= for a subdomain); "unknown" when
    # the record could not be looked up
    policy: str = "none"
    disposition: str = "none"  # what to do, after pct=: none, quarantine, reject
    reason: str = ""


def _find_record(domain: str, txt: Callable[[str], list[bytes]]) -> DmarcRecord | None:
    found = [r.decode("utf-8", "replace") for r in txt(f"_dmarc.{domain}")]
    records = [r for r in found if r.lstrip().lower().startswith("v=dmarc1")]
    if len(records) != 1:
        return None  # section 6.6.3: none, or more than one, is no policy
    return parse_record(records[0])


def _aligned(domain: str, from_domain: str, mode: str) -> bool:
    domain = domain.lower().rstrip(".")
    if mode == "s":
        return domain == from_domain
    return organizational_domain(domain) == organizational_domain(from_domain)


def evaluate(
    from_domain: str,
    spf: SpfResult | None,
    dkim: Sequence[DkimResult],
    txt: Callable[[str], list[bytes]],
    chance: Callable[[], float] = random.random,
) -> DmarcResult:
    """The DMARC result of a message whose From domain is ``from_domain``."""
    from_domain = from_domain.lower().rstrip(".")
    if not from_domain:
        return DmarcResult("none", "", reason="no From domain")
    try:
        record = _find_record(from_domain, txt)
        policy_of = "p"
        org = organizational_domain(from_domain)
        if record is None and org != from_domain:
            record = _find_record(org, txt)
            policy_of = "sp"
    except DnsTemporary as exc:
        return DmarcResult("temperror", from_domain, "unknown", reason=str(exc))
    if record is None:
        return DmarcResult("none", from_domain)
    policy = record.p if policy_of == "p" else (record.sp or record.p)
    if spf is not None and spf.result == "pass" and _aligned(spf.domain, from_domain, record.aspf):
        return DmarcResult("pass", from_domain, policy, reason="spf aligned")
    for signature in dkim:
        if signature.result == "pass" and _aligned(signature.domain, from_domain, record.adkim):
            return DmarcResult("pass", from_domain, policy, reason=f"dkim d={signature.domain}")
    spf_unknown = (
        spf is not None
        and spf.result == "temperror"
        and _aligned(spf.domain, from_domain, record.aspf)
    )
    if spf_unknown or any(
        s.result == "temperror" and _aligned(s.domain, from_domain, record.adkim) for s in dkim
    ):
        # An identifier we could not check might have aligned: no verdict yet.
        return DmarcResult("temperror", from_domain, policy, reason="DNS failure in SPF or DKIM")
    disposition = policy
    if policy != "none" and chance() * 100 >= record.pct:
        disposition = "quarantine" if policy == "reject" else "none"
    return DmarcResult("fail", from_domain, policy, disposition)
