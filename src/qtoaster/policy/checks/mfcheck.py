"""mfcheck at MAIL: the envelope sender's domain must exist in DNS (spec 9).

On when control/mfcheck is a non-zero integer; the connection's MFCHECK variable, when
set, decides instead (``""`` or a zero number: off; anything else: on).  The domain is
the text after the LAST ``@``; the null sender, qmail's double-bounce sender ``#@[]``,
an address without ``@`` or with nothing after it are not checked (mfcheck's
``j < addr.len``), and an IP literal (``[1.2.3.4]``, a bare dotted quad) is accepted.

The lookup is qmail's dns_mxip, reduced to "does it exist": any MX record accepts (MX
names without addresses are accepted too, spec 9 NOTE, so they are not resolved); no MX
(NXDOMAIN or no data) falls back to the domain's A and AAAA records.  Nothing found ->
``553 ... must exist``; a temporary failure (SERVFAIL, REFUSED, timeout, no server) ->
``451 DNS temporary failure``.

Invariants: answers are cached (dnspython's LRUCache, honouring TTLs); a sender whose MX
answer is in the cache is decided at once, without a task; anything else returns an
awaitable, so the event loop never waits for DNS.
"""

from __future__ import annotations

import asyncio
import enum
import re
import time
from collections.abc import Awaitable, Mapping, Sequence
from pathlib import Path

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdataclass
import dns.rdatatype
import dns.resolver

from qtoaster.config.rolecontrols import load_mfcheck
from qtoaster.core.literal import ip_literal
from qtoaster.core.reply import Reply
from qtoaster.net.resolver import CACHE_SIZE, make_resolver
from qtoaster.policy.verdict import PASS, Facts, SessionState, Stage, Verdict

NO_SUCH_DOMAIN = Reply(553, "sorry, your envelope sender domain must exist (#5.7.1)")
DNS_TEMPORARY = Reply(451, "DNS temporary failure (#4.3.0)")
DOUBLE_BOUNCE = "#@[]"  # qmail's sender of double bounces (spec 9)

_DIGITS = re.compile(r"\s*[0-9]+\s*")


class Existence(enum.Enum):
    EXISTS = "exists"
    MISSING = "missing"  # NXDOMAIN, or neither MX nor A/AAAA: permanent
    UNKNOWN = "unknown"  # temporary failure: try again later


class SenderDomains:
    """Asks DNS whether a domain can have mail addresses (dnspython, with a shared cache)."""

    def __init__(
        self,
        nameservers: Sequence[str] = (),
        *,
        timeout: float = 5.0,
        lifetime: float = 15.0,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        self._resolver = make_resolver(
            nameservers, timeout=timeout, lifetime=lifetime, cache_size=cache_size
        )
        self._cache = dns.resolver.LRUCache(cache_size)
        self._resolver.cache = self._cache
        self._exists_until: dict[str, float] = {}  # domain -> when its MX answer expires

    def peek(self, domain: str) -> Existence | None:
        """The answer if the cache already holds the domain's MX records, else None.

        A domain seen to exist is remembered until its MX answer expires, so a repeated
        sender costs one dict lookup, not a DNS name parse and a cache probe."""
        until = self._exists_until.get(domain)
        if until is not None and until > time.time():
            return Existence.EXISTS
        try:
            name = dns.name.from_text(domain)
        except (dns.exception.DNSException, UnicodeError):
            return Existence.MISSING
        answer = self._cache.get((name, dns.rdatatype.MX, dns.rdataclass.IN))
        if answer is not None and answer.rrset:
            if len(self._exists_until) >= CACHE_SIZE:
                self._exists_until.clear()
            self._exists_until[domain] = answer.expiration
            return Existence.EXISTS
        return None

    async def exists(self, domain: str) -> Existence:
        """dns_mxip's verdict on *domain* (not an IP literal)."""
        try:
            name = dns.name.from_text(domain)
        except (dns.exception.DNSException, UnicodeError):
            return Existence.MISSING  # no name DNS can carry: dns_mxip's DNS_HARD
        mx = await self._query(name, dns.rdatatype.MX)
        if mx is not Existence.MISSING:
            return mx  # any MX exists; a temporary failure stays one
        found = await asyncio.gather(
            self._query(name, dns.rdatatype.A), self._query(name, dns.rdatatype.AAAA)
        )
        for outcome in (Existence.EXISTS, Existence.UNKNOWN):
            if outcome in found:
                return outcome
        return Existence.MISSING

    async def _query(self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> Existence:
        try:
            answer = await self._resolver.resolve(name, rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return Existence.MISSING
        except (dns.exception.DNSException, OSError):
            # NoNameservers (SERVFAIL/REFUSED everywhere), timeouts, unreachable servers.
            return Existence.UNKNOWN
        return Existence.EXISTS if answer.rrset else Existence.MISSING


def mfcheck_enabled(env: Mapping[str, str], control_value: int) -> bool:
    """MFCHECK from the connection when set ("" or a zero number: off), else the file."""
    raw = env.get("MFCHECK")
    if raw is None:
        return control_value != 0
    if not raw.strip():
        return False
    return int(raw) != 0 if _DIGITS.fullmatch(raw) else True


def sender_domain(sender: str) -> str | None:
    """The domain mfcheck asks about, or None when the sender is not checked."""
    if not sender or sender == DOUBLE_BOUNCE:
        return None
    _, at, domain = sender.rpartition("@")
    if not at or not domain or ip_literal(domain) is not None:
        return None
    return domain


class Mfcheck:
    name = "mfcheck"
    stages = frozenset({Stage.MAIL})

    def __init__(self, domains: SenderDomains, control_value: int) -> None:
        self._domains = domains
        self._control_value = control_value

    @classmethod
    def from_control_dir(cls, control_dir: Path, domains: SenderDomains) -> Mfcheck:
        return cls(domains, load_mfcheck(control_dir))

    def check(
        self, stage: Stage, facts: Facts, state: SessionState
    ) -> Verdict | Awaitable[Verdict]:
        if not mfcheck_enabled(facts.env, self._control_value):
            return PASS
        domain = sender_domain(facts.sender or "")
        if domain is None:
            return PASS
        known = self._domains.peek(domain)
        if known is not None:
            return _verdict(known)
        return self._ask(domain)

    async def _ask(self, domain: str) -> Verdict:
        return _verdict(await self._domains.exists(domain))


def _verdict(existence: Existence) -> Verdict:
    if existence is Existence.EXISTS:
        return PASS
    if existence is Existence.MISSING:
        return Verdict(reply=NO_SUCH_DOMAIN)
    return Verdict(reply=DNS_TEMPORARY)
