"""One way to build a dnspython resolver from qtoaster's ``[dns] nameservers`` setting.

Remote delivery (``remote/dns.py``), mfcheck and rblsmtpd each keep their own resolver
(their timeouts differ), built here: the given ``IP``/``IP:PORT`` servers, else the
system's ``/etc/resolv.conf``, with a TTL-aware LRU cache.

Invariants: a bad nameserver is a ConfigError naming it; a machine without a usable
resolv.conf gets a resolver whose every lookup fails temporarily, never a crash.
"""

from __future__ import annotations

from collections.abc import Sequence

import dns.asyncresolver
import dns.nameserver
import dns.resolver

from qtoaster.config.endpoints import parse_nameserver
from qtoaster.core.errors import ConfigError

CACHE_SIZE = 10000  # answers kept per resolver (dnspython's LRUCache honours TTLs)


def make_resolver(
    nameservers: Sequence[str],
    *,
    timeout: float,
    lifetime: float,
    cache_size: int = CACHE_SIZE,
) -> dns.asyncresolver.Resolver:
    resolver = _servers(nameservers)
    resolver.timeout = timeout
    resolver.lifetime = lifetime
    resolver.cache = dns.resolver.LRUCache(cache_size)
    return resolver


def _servers(nameservers: Sequence[str]) -> dns.asyncresolver.Resolver:
    if not nameservers:
        try:
            return dns.asyncresolver.Resolver()  # /etc/resolv.conf
        except dns.resolver.NoResolverConfiguration:
            return dns.asyncresolver.Resolver(configure=False)  # every lookup: temporary
    problems: list[str] = []
    servers: list[str | dns.nameserver.Nameserver] = []
    for text in nameservers:
        try:
            servers.append(dns.nameserver.Do53Nameserver(*parse_nameserver(text)))
        except ValueError as exc:
            problems.append(f"nameserver {text!r}: {exc}")
    if problems:
        raise ConfigError(problems)
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = servers
    return resolver


def make_sync_resolver(
    nameservers: Sequence[str],
    *,
    timeout: float,
    lifetime: float,
    cache_size: int = CACHE_SIZE,
) -> dns.resolver.Resolver:
    """A blocking resolver over the same servers, for libraries that call DNS themselves
    (pyspf, dkimpy: mailauth runs them in its own threads, never on an event loop)."""
    resolver = _sync_servers(nameservers)
    resolver.timeout = timeout
    resolver.lifetime = lifetime
    resolver.cache = dns.resolver.LRUCache(cache_size)
    return resolver


def _sync_servers(nameservers: Sequence[str]) -> dns.resolver.Resolver:
    template = _servers(nameservers)  # validates, raises ConfigError naming a bad server
    if not nameservers:
        try:
            return dns.resolver.Resolver()
        except dns.resolver.NoResolverConfiguration:
            return dns.resolver.Resolver(configure=False)
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = template.nameservers
    return resolver
