"""A client's DNSBL score as postscreen computes it (postscreen(8), postscreen_dnsbl_sites):
the weights of the ``[dnsbl] sites`` that list the client, added up.

A site lists a client when ``<reversed address>.<zone>`` has an A record that its filter
accepts (any A record when it has none, except 127.255.255.0/24: a DNSxL's operational
error, such as Spamhaus' "query refused", is no listing: policy/rbl.py says the same).
IPv6 clients are looked up by their reversed nibbles (RFC 5782 2.4); an IPv4-mapped client
as IPv4.  Each site counts once, however many of its records match.

All sites are asked at once; what has not answered within ``timeout`` seconds, or failed,
counts 0 (postscreen: a DNSBL that does not answer does not list) and is logged.  Scores
are kept per client address for ``cache_seconds`` by the worker's one :class:`Dnsbl` (in
memory, at most :data:`CACHE_MAX` clients; a full cache is emptied), so a client that
opens many sessions costs one round of lookups.

Invariant: a lookup never raises to its caller; a failure lowers no score below what
the sites that answered say.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.name
import dns.resolver
from dns.rdtypes.IN.A import A

from qtoaster.config.screensettings import DnsblSettings, DnsblSite
from qtoaster.core.clock import Clock, SystemClock
from qtoaster.net.resolver import make_resolver
from qtoaster.policy.rbl import client_address, reversed_name

log = logging.getLogger("qtoaster.policy.dnsbl")

CACHE_MAX = 10_000
_ERROR_NET = ipaddress.ip_network("127.255.255.0/24")


@dataclass(frozen=True, slots=True)
class Score:
    """A client's score and the sites that listed it (in ``[dnsbl] sites`` order)."""

    total: int
    listed: tuple[DnsblSite, ...] = ()

    def blocked_by(self) -> str:
        """The zones with a positive weight that listed the client, for the reply."""
        return ", ".join(site.zone for site in self.listed if site.weight > 0)


class Dnsbl:
    """Scores clients; one per worker (its cache serves every session)."""

    def __init__(
        self,
        settings: DnsblSettings,
        *,
        nameservers: Sequence[str] = (),
        clock: Clock | None = None,
        resolver: dns.asyncresolver.Resolver | None = None,
    ) -> None:
        self.settings = settings
        self._clock = clock or SystemClock()
        self._resolver = resolver or make_resolver(
            nameservers, timeout=settings.timeout, lifetime=settings.timeout
        )
        self._cache: dict[str, tuple[float, Score]] = {}  # address -> (until, score)

    def cached(self, remote_ip: str) -> Score | None:
        """The client's score if the cache still holds it (no lookup, no await)."""
        kept = self._cache.get(remote_ip)
        if kept is None:
            return None
        if kept[0] <= self._clock.time():
            del self._cache[remote_ip]
            return None
        return kept[1]

    async def score(self, remote_ip: str) -> Score:
        """The client's score (cached, else asked of every site at once)."""
        kept = self.cached(remote_ip)
        if kept is not None:
            return kept
        address = client_address(remote_ip)
        if address is None:
            log.warning("dnsbl client address %r is no IP address, not looked up", remote_ip)
            return Score(0)
        name = reversed_name(address)
        sites = self.settings.sites
        tasks = [asyncio.ensure_future(self._listed(site, name)) for site in sites]
        done, pending = await asyncio.wait(tasks, timeout=self.settings.timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        listed = []
        for site, task in zip(sites, tasks, strict=True):
            if task not in done:
                log.warning("dnsbl %s for %s: no answer in time, counts 0", site.zone, address)
            elif task.result():
                listed.append(site)
        score = Score(sum(site.weight for site in listed), tuple(listed))
        if self.settings.cache_seconds:
            if len(self._cache) >= CACHE_MAX:
                self._cache.clear()
            self._cache[remote_ip] = (self._clock.time() + self.settings.cache_seconds, score)
        return score

    async def _listed(self, site: DnsblSite, reversed_address: str) -> bool:
        try:
            name = dns.name.from_text(f"{reversed_address}.{site.zone}")
            answer = await self._resolver.resolve(name, "A", search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return False
        except (dns.exception.DNSException, OSError) as exc:
            log.warning("dnsbl %s: lookup failed (%s), counts 0", site.zone, exc)
            return False
        addresses = [r.address for r in answer if isinstance(r, A)]
        if site.filter is None:
            errors = [a for a in addresses if ipaddress.ip_address(a) in _ERROR_NET]
            if errors and len(errors) == len(addresses):
                log.warning(
                    "dnsbl %s answered %s: an operational error, ignored", site.zone, errors[0]
                )
                return False
            return bool(addresses)
        return any(site.matches(a) for a in addresses)
