"""DNS for remote delivery: a domain's mail hosts and a relay's addresses (spec 17.2, 18).

Follows qmail-remote.c and dns.c (netqmail 1.06 with the oversize-DNS patch):

- IP literals ``[1.2.3.4]``, ``[IPv6:...]`` and bare dotted quads are used as given.
- MX lookup, lowest preference first, equal preferences in random order (dns_mxip).
  Every MX name is resolved to A and AAAA (IPv4 first); a name that has neither, or does
  not exist, is skipped.  No MX at all = "implicit MX": the domain's own addresses with
  preference 0 (RFC 5321 5.1).  A lone ``0 .`` MX is a null MX (RFC 7505 3).
- If one of this machine's addresses is an MX, only MXs with a strictly lower
  preference are kept (qmail-remote's ipme rule); none left = permanent #5.4.6.
- Errors keep qmail's split (spec 18): NXDOMAIN and "no data" are permanent, everything
  else (SERVFAIL, REFUSED, timeouts, unreachable or malformed servers) temporary.  MX names
  failing temporarily are ignored when another MX gave addresses (dns_mxip's flagsoft).
- Answers over 512 bytes: dnspython retries over TCP when the UDP answer is truncated.

Invariants: a successful `mail_hosts` is non-empty and every MailHost has >= 1 address;
every failure is a `DnsFailure` carrying qmail-remote's text; one LRU cache serves every
lookup of a Resolver.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import random
from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdata
import dns.resolver
from dns.rdtypes.ANY.MX import MX
from dns.rdtypes.ANY.TXT import TXT
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA

from qtoaster.core.errors import DeliveryAttemptError
from qtoaster.core.literal import ip_literal
from qtoaster.net.resolver import make_resolver
from qtoaster.remote.ipme import local_addresses

TEMP_DNS = "Sorry, I couldn't find any host by that name. (#4.1.2)"
NO_MX = "Sorry, I couldn't find a mail exchanger or IP address. (#5.4.4)"
AMBIGUOUS_MX = (
    "Sorry. Although I'm listed as a best-preference MX or A for that host,\n"
    "it isn't in my control/locals file, so I don't treat it as local. (#5.4.6)"
)


def perm_dns(host: str) -> str:
    return f"Sorry, I couldn't find any host named {host}. (#5.1.2)"


def null_mx(domain: str) -> str:
    return f"Domain {domain} does not accept mail (null MX). (#5.1.10)"


@dataclass(frozen=True, slots=True)
class MailHost:
    name: str  # the MX (or literal / domain) name, without the trailing dot
    preference: int
    addresses: tuple[str, ...]  # IPv4 first, then IPv6, compressed text form


class DnsFailure(DeliveryAttemptError):
    """A lookup failed; `report` is qmail-remote's text, `temporary` says retry later."""

    def __init__(self, temporary: bool, report: str) -> None:
        super().__init__(report)
        self.temporary = temporary
        self.report = report


class _Status(enum.Enum):
    FOUND = "found"
    NODATA = "nodata"  # the name exists but has no record of that type
    NXDOMAIN = "nxdomain"
    SOFT = "soft"  # try again later


class Resolver:
    """Asks DNS (dnspython's asyncio resolver) with qmail-remote's rules and texts."""

    def __init__(
        self,
        nameservers: Sequence[str] = (),
        *,
        timeout: float = 5.0,
        lifetime: float = 30.0,
        rng: random.Random | None = None,
        local_ips: frozenset[str] | None = None,
    ) -> None:
        self._resolver = make_resolver(nameservers, timeout=timeout, lifetime=lifetime)
        self._rng = rng if rng is not None else random.Random()
        ips = local_addresses() if local_ips is None else local_ips
        self._local_ips = frozenset(_normal(ip) for ip in ips)

    async def mail_hosts(self, domain: str) -> list[MailHost]:
        """Where to deliver mail for *domain*, best first; DnsFailure if nowhere."""
        literal = ip_literal(domain)
        if literal is not None:
            return self._without_me([MailHost(domain, 0, (literal,))])
        name = _dns_name(domain)
        status, records = await self._query(name, "MX")
        if status is _Status.SOFT:
            raise DnsFailure(True, TEMP_DNS)
        if status is _Status.NXDOMAIN:
            raise DnsFailure(False, perm_dns(domain))
        exchanges = [r for r in records if isinstance(r, MX)]
        if not exchanges:  # no MX: implicit MX, RFC 5321 5.1
            addresses = await self._addresses_or_fail(name, domain)
            return self._without_me([MailHost(domain, 0, addresses)])
        if _is_null_mx(exchanges):
            raise DnsFailure(False, null_mx(domain))
        return self._without_me(await self._resolve_exchanges(exchanges))

    async def host_addresses(self, name: str) -> tuple[str, ...]:
        """A and AAAA of a relay (smtproutes: no MX lookup, no ipme rule)."""
        literal = ip_literal(name)
        if literal is not None:
            return (literal,)
        return await self._addresses_or_fail(_dns_name(name), name)

    async def txt(self, name: str) -> list[str] | None:
        """The TXT records of *name* (strings joined per record); None when DNS failed."""
        try:
            status, records = await self._query(_dns_name(name), "TXT")
        except DnsFailure:
            return []
        if status is _Status.SOFT:
            return None
        return [
            b"".join(r.strings).decode("utf-8", "replace") for r in records if isinstance(r, TXT)
        ]

    async def addresses(self, name: str) -> tuple[str, ...]:
        """A and AAAA of *name*, () when it has none or DNS failed."""
        try:
            return (await self._addresses(_dns_name(name)))[1]
        except DnsFailure:
            return ()

    # -- steps ------------------------------------------------------------------------

    async def _resolve_exchanges(self, exchanges: list[MX]) -> list[MailHost]:
        ordered = self._order(exchanges)
        found = await asyncio.gather(*(self._addresses(name) for name, _ in ordered))
        hosts = [
            MailHost(name, preference, addresses)
            for (name, preference), (_, addresses) in zip(ordered, found, strict=True)
            if addresses
        ]
        if hosts:
            return hosts
        if any(status is _Status.SOFT for status, _ in found):
            raise DnsFailure(True, TEMP_DNS)
        raise DnsFailure(False, NO_MX)

    def _order(self, exchanges: list[MX]) -> list[tuple[str, int]]:
        """(name, preference), lowest preference first, equal ones shuffled (dns_mxip)."""
        by_preference: dict[int, list[str]] = {}
        for mx in exchanges:
            if mx.exchange == dns.name.root:
                continue  # "." is a null MX, never a host (RFC 7505 3)
            by_preference.setdefault(mx.preference, []).append(_text(mx.exchange))
        ordered: list[tuple[str, int]] = []
        for preference in sorted(by_preference):
            names = sorted(set(by_preference[preference]))  # seeded rng -> same order
            self._rng.shuffle(names)
            ordered.extend((name, preference) for name in names)
        return ordered

    def _without_me(self, hosts: list[MailHost]) -> list[MailHost]:
        """qmail-remote's ipme rule: drop MXs not strictly better than the best one = me."""
        mine = [h.preference for h in hosts if not self._local_ips.isdisjoint(h.addresses)]
        if not mine:
            return hosts
        best_me = min(mine)
        kept = [h for h in hosts if h.preference < best_me]
        if not kept:
            raise DnsFailure(False, AMBIGUOUS_MX)
        return kept

    async def _addresses_or_fail(self, name: dns.name.Name, host: str) -> tuple[str, ...]:
        status, addresses = await self._addresses(name)
        if status is _Status.SOFT:
            raise DnsFailure(True, TEMP_DNS)
        if not addresses:  # NXDOMAIN or no A/AAAA: dns_ip's DNS_HARD
            raise DnsFailure(False, perm_dns(host))
        return addresses

    async def _addresses(self, name: dns.name.Name | str) -> tuple[_Status, tuple[str, ...]]:
        """A then AAAA of *name*; FOUND with addresses, else the status that explains why."""
        if isinstance(name, str):
            literal = ip_literal(name)
            if literal is not None:  # an MX naming an IP: dns_ipplus uses it as it is
                return _Status.FOUND, (literal,)
            name = dns.name.from_text(name)
        (a_status, a), (aaaa_status, aaaa) = await asyncio.gather(
            self._query(name, "A"), self._query(name, "AAAA")
        )
        addresses = tuple(_normal(r.address) for r in (*a, *aaaa) if isinstance(r, (A, AAAA)))
        if addresses:
            return _Status.FOUND, addresses
        for status in (_Status.NXDOMAIN, _Status.SOFT):
            if status in (a_status, aaaa_status):
                return status, ()
        return _Status.NODATA, ()

    async def _query(
        self, name: dns.name.Name, rdtype: str
    ) -> tuple[_Status, list[dns.rdata.Rdata]]:
        try:
            answer = await self._resolver.resolve(name, rdtype, search=False)
        except dns.resolver.NXDOMAIN:
            return _Status.NXDOMAIN, []
        except dns.resolver.NoAnswer:
            return _Status.NODATA, []
        except dns.exception.DNSException:
            # NoNameservers (SERVFAIL/REFUSED everywhere), LifetimeTimeout, FormError...
            return _Status.SOFT, []
        except OSError:
            return _Status.SOFT, []
        return _Status.FOUND, list(answer)


def _dns_name(host: str) -> dns.name.Name:
    """*host* as an absolute DNS name; a name DNS cannot carry is a permanent failure."""
    try:
        if not host or host == ".":
            raise dns.name.EmptyLabel
        return dns.name.from_text(host)
    except (dns.exception.DNSException, UnicodeError) as exc:
        raise DnsFailure(False, perm_dns(host)) from exc


def _is_null_mx(exchanges: list[MX]) -> bool:
    """RFC 7505 3: exactly one MX, preference 0, target the root."""
    return (
        len(exchanges) == 1
        and exchanges[0].preference == 0
        and exchanges[0].exchange == dns.name.root
    )


def _text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True)


def _normal(address: str) -> str:
    return ipaddress.ip_address(address).compressed
