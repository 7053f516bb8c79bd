"""The syntax of the endpoints written in settings, shared by ``config`` and the roles.

A scanner's ``HOST:PORT`` or unix socket path, a nameserver's ``IP[:PORT]`` and the
rblsmtpd zones are checked here when settings load (so ``config check`` names them)
and parsed here again by the role that uses them, so the two never disagree.

Invariant: pure functions; a bad value is a ValueError (or one ConfigError naming every
bad zone), never a partial result.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from qtoaster.core.errors import ConfigError


def parse_address(address: str) -> tuple[str, int] | str:
    """``(host, port)`` for ``HOST:PORT`` or ``[v6]:PORT``; the path for a unix socket.

    Raises :class:`ValueError` with a readable reason for anything else.
    """
    if address.startswith("/"):
        return address
    host, sep, port_text = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"scanner address {address!r}: write an IPv6 address as [ADDR]:PORT")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"scanner address {address!r}: expected HOST:PORT or /path/to/socket")
    return host, int(port_text)


def parse_nameserver(text: str) -> tuple[str, int]:
    """``IP``, ``IP:PORT``, ``[v6]`` or ``[v6]:PORT`` (a bare v6 has no port) -> (ip, port)."""
    port_text = ""
    if text.startswith("["):
        host, bracket, port_text = text[1:].partition("]")
        if not bracket or (port_text and not port_text.startswith(":")):
            raise ValueError("expected [IPv6]:PORT")
        port_text = port_text[1:] if port_text else "53"
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, "53"
    if not port_text.isascii() or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port {port_text!r}")
    return ipaddress.ip_address(host).compressed, int(port_text)


@dataclass(frozen=True, slots=True)
class Source:
    """One rblsmtpd zone: ``-r zone``, ``-r zone:text`` or (``anti``) ``-a zone``."""

    zone: str  # without the trailing dot
    anti: bool = False
    message: str | None = None  # "-r zone:text": A record lists, this text answers


def parse_sources(rbl: Sequence[str], antirbl: Sequence[str]) -> tuple[Source, ...]:
    """Settings -> sources, anti-RBL zones first; ConfigError naming every bad zone."""
    problems: list[str] = []
    sources: list[Source] = []
    for anti, specs in ((True, antirbl), (False, rbl)):
        for spec in specs:
            zone, colon, message = spec.partition(":")
            zone = zone.rstrip(".")
            if anti and colon:
                problems.append(f"antirbl {spec!r}: an anti-RBL zone takes no message")
                continue
            try:
                import dns.exception  # dnspython only when rblsmtpd is configured
                import dns.name

                if not zone:
                    raise dns.name.EmptyLabel
                dns.name.from_text(zone)
            except (dns.exception.DNSException, UnicodeError) as exc:
                kind = "antirbl" if anti else "rbl"
                problems.append(f"{kind} {spec!r}: not a DNS zone ({exc})")
                continue
            sources.append(Source(zone, anti, message if colon else None))
    if problems:
        raise ConfigError(problems)
    return tuple(sources)
