"""IP address literals in domains and routes: ``[1.2.3.4]``, ``[IPv6:...]``, bare dotted quads.

Remote delivery (smtproutes, MX lookup) and mfcheck both need to tell a literal from a
name; this is the one place that decides.  Invariant: pure; ValueError only from
:func:`literal_address`, whose argument must be a bracketed literal.
"""

from __future__ import annotations

import ipaddress
import re

DOTTED_QUAD = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+")


def literal_address(text: str) -> str:
    """The address in ``[1.2.3.4]``, ``[IPv6:...]`` or ``[...]`` (RFC 5321 4.1.3).

    ValueError if *text* is bracketed but not an address literal.
    """
    inner = text[1:-1] if text.startswith("[") and text.endswith("]") else None
    if inner is None:
        raise ValueError(f"{text!r} is not a bracketed address literal")
    if inner[:5].lower() == "ipv6:":
        return ipaddress.IPv6Address(inner[5:]).compressed
    return ipaddress.ip_address(inner).compressed


def ip_literal(host: str) -> str | None:
    """The address if *host* is an IP literal or a bare dotted quad, else None (a name)."""
    if host.startswith("["):
        try:
            return literal_address(host)
        except ValueError:
            return None
    if DOTTED_QUAD.fullmatch(host):
        try:
            return ipaddress.IPv4Address(host).compressed
        except ValueError:
            return None
    return None


IPV6_PREFIX = 64  # an IPv6 client is counted by its /64 (RFC 4291 2.5.4)


def client_key(ip: str) -> str:
    """The key a client address is counted under, by the connection limits and the login
    throttle alike: IPv4 as is, IPv6 as its /64 (an IPv4-mapped one as IPv4: the interface
    identifier is the client's to choose, so a /128 would cost an attacker nothing),
    anything else (a Unix socket's "local") as given. IPv4 costs no parsing: the accept
    path runs per connection."""
    if ":" not in ip:
        return ip
    try:
        address = ipaddress.IPv6Address(ip)
    except ValueError:
        return ip
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(address), IPV6_PREFIX), strict=False))
