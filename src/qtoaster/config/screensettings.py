"""The settings of postscreen-style screening (issue 18): ``[pregreet]`` (early talkers)
and ``[dnsbl]`` (weighted DNS block and allow lists) of qtoaster.toml, typed and checked
as ``config/settings.py`` does the rest (docs/configuration.md, docs/antispam.md).

``[dnsbl] sites`` uses postscreen_dnsbl_sites' syntax, parsed by :func:`parse_site`:
``zone[=filter][*weight]``, where the filter is ``d.d.d.d`` and each ``d`` a number or
``[`` numbers and ``n..m`` ranges separated by ``;`` ``]`` (``127.0.0.[2..11]``,
``127.0.[0..255].[1;3]``), and the weight an integer, negative for an allow list
(``list.dnswl.org*-5``); without ``*`` the weight is 1.

Invariants: as settings.py's: every key known, typed and within bounds, or a problem
recorded in the :class:`~qtoaster.config.tables.Tables`; absent keys take the defaults.
Both features are off by default (pregreet ``enabled = false``, no dnsbl ``sites``);
tcp.smtp's PREGREET and DNSBL switch them per client.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from qtoaster.config.tables import Tables, int_between, is_bool, seconds_between
from qtoaster.core.errors import FormatError


@dataclass(frozen=True, slots=True)
class PregreetSettings:
    """[pregreet]: postscreen's greet test (postscreen_greet_wait, _greet_banner) and its
    pipelining test.  The wait defaults to 1 s, not postscreen's 6 s: postscreen pays the
    wait once per client a day (it remembers who passed), we pay it on every session."""

    enabled: bool = False
    wait: float = 1.0  # seconds the greeting waits after the connection opened; 0: no wait
    multiline: bool = False  # write "220-" at once and the final "220 " after the wait


@dataclass(frozen=True, slots=True)
class DnsblSite:
    """One entry of ``[dnsbl] sites``."""

    zone: str
    weight: int = 1
    # the answers that count: per octet a set of values; None: any address
    # (except 127.255.255.0/24, a DNSxL's operational error, see policy/dnsbl.py)
    filter: tuple[frozenset[int], ...] | None = None
    text: str = ""  # the entry as written (log lines, replies)

    def matches(self, address: str) -> bool:
        """Whether the A record ``address`` counts for this site."""
        if self.filter is None:
            return True
        octets = address.split(".")
        if len(octets) != 4 or not all(o.isdigit() for o in octets):
            return False
        return all(int(o) in allowed for o, allowed in zip(octets, self.filter, strict=True))


@dataclass(frozen=True, slots=True)
class DnsblSettings:
    """[dnsbl]: postscreen_dnsbl_sites, _threshold, _whitelist_threshold, _timeout, and
    how long a client's score is remembered by a worker."""

    sites: tuple[DnsblSite, ...] = ()  # none: the check is off
    threshold: int = 1  # a score at or above it is refused (postscreen's default 1)
    allow_threshold: int = 0  # negative: a score at or below it skips the other screens
    timeout: float = 5.0  # seconds for all lookups of one client together
    cache_seconds: int = 60  # a client's score is reused for this long (0: not kept)


_LABEL = r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?"
_ZONE = re.compile(rf"{_LABEL}(\.{_LABEL})+")
_WEIGHT = re.compile(r"-?[0-9]{1,6}")
_NUMBER = re.compile(r"[0-9]{1,3}")


class SiteError(FormatError, ValueError):
    """A [dnsbl] sites entry that does not follow postscreen_dnsbl_sites' syntax."""


def parse_site(text: str) -> DnsblSite:
    """``zone[=filter][*weight]`` (postscreen_dnsbl_sites); SiteError when malformed."""
    rest, star, weight_text = text.strip().partition("*")
    weight = 1
    if star:
        if not _WEIGHT.fullmatch(weight_text.strip()):
            raise SiteError(f"{text!r}: the weight after * must be an integer")
        weight = int(weight_text)
    zone, equals, filter_text = rest.partition("=")
    zone = zone.strip().lower().rstrip(".")
    if not _ZONE.fullmatch(zone) or len(zone) > 200:
        raise SiteError(f"{text!r}: {zone!r} is no DNS zone")
    pattern = _filter(filter_text.strip(), text) if equals else None
    return DnsblSite(zone, weight, pattern, text.strip())


def _filter(text: str, site: str) -> tuple[frozenset[int], ...]:
    octets = re.findall(r"\[[^\]]*\]|[^.\[\]]+", text)
    if len(octets) != 4 or ".".join(octets) != text:
        raise SiteError(f"{site!r}: the filter must be d.d.d.d (each d a number or [...])")
    return tuple(_octet(octet, site) for octet in octets)


def _octet(text: str, site: str) -> frozenset[int]:
    items = text[1:-1].split(";") if text.startswith("[") else [text]
    values: set[int] = set()
    for item in items:
        low, dots, high = item.strip().partition("..")
        if not _NUMBER.fullmatch(low) or (dots and not _NUMBER.fullmatch(high)):
            raise SiteError(f"{site!r}: {text!r} is not a number 0..255 or a range n..m")
        first = int(low)
        last = int(high) if dots else first
        if not first <= last <= 255:
            raise SiteError(f"{site!r}: {text!r} is not a number 0..255 or a range n..m")
        values.update(range(first, last + 1))
    return frozenset(values)


def pregreet_settings(tables: Tables) -> PregreetSettings:
    d = PregreetSettings()
    return PregreetSettings(
        enabled=tables.get("pregreet", "enabled", is_bool, d.enabled),
        wait=float(tables.get("pregreet", "wait", seconds_between(0, 30), d.wait)),
        multiline=tables.get("pregreet", "multiline", is_bool, d.multiline),
    )


def dnsbl_settings(tables: Tables) -> DnsblSettings:
    d = DnsblSettings()
    sites: list[DnsblSite] = []

    def valid_sites(value: Any) -> str | None:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return 'must be a list of "zone[=filter][*weight]" strings'
        try:
            sites[:] = [parse_site(v) for v in value]
        except SiteError as exc:
            return str(exc)
        return None

    tables.get("dnsbl", "sites", valid_sites, [])
    return DnsblSettings(
        sites=tuple(sites),
        threshold=tables.get("dnsbl", "threshold", int_between(1, 1000), d.threshold),
        allow_threshold=tables.get(
            "dnsbl", "allow_threshold", int_between(-1000, 0), d.allow_threshold
        ),
        timeout=float(tables.get("dnsbl", "timeout", seconds_between(0.1, 30), d.timeout)),
        cache_seconds=tables.get("dnsbl", "cache_seconds", int_between(0, 86400), d.cache_seconds),
    )
