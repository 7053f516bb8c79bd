"""control/smtproutes: parse the ``domain:relay[:port]`` lines and look a domain up.

Follows qmail-remote.c and qmail-control(5) (spec 17.2, 2): the key is split off at the
FIRST colon and compared case-insensitively (A-Z only, qmail's constmap); a later
duplicate key wins, as in constmap.  A lookup tries the full domain, then every
``.suffix`` (the dot included, so ``.example.com`` routes subdomains only), then the
empty key (``:relay`` = smarthost for everything).  An empty relay is an exception that
means "use MX as usual": `lookup` returns None for it, never a Route with relay "".

Invariants: pure (no I/O); `SmtpRoutes.parse` either returns a complete table or raises
one ConfigError listing every bad line; a Route's relay is never empty and its port is
None (the default port) or 1..65535.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from types import MappingProxyType

from qtoaster.core.domain import domain_key
from qtoaster.core.errors import ConfigError
from qtoaster.core.literal import DOTTED_QUAD, literal_address

# A host name as a relay: letters, digits, '-', '_' and dots (underscores occur in the wild).
_HOST_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?")


@dataclass(frozen=True, slots=True)
class Route:
    """Where to send mail for a routed domain: the relay's A/AAAA, not its MX."""

    relay: str  # "[1.2.3.4]", "1.2.3.4", "[IPv6:...]" / "[...]" or a host name
    port: int | None  # None = the default SMTP port


class SmtpRoutes:
    """The smtproutes table: lower-cased key -> Route, or None for "use MX"."""

    __slots__ = ("_table",)

    def __init__(self, table: dict[str, Route | None]) -> None:
        self._table = MappingProxyType(dict(table))

    @classmethod
    def parse(cls, lines: list[str]) -> SmtpRoutes:
        """Parse control/smtproutes lines; ConfigError(problems) if any line is bad."""
        table: dict[str, Route | None] = {}
        problems: list[str] = []
        for number, line in enumerate(lines, 1):
            if not line.strip() or line.startswith("#"):
                continue  # read_list already drops these; tolerate them from elsewhere
            try:
                key, route = _parse_line(line)
            except ValueError as exc:
                problems.append(f"smtproutes line {number}: {line!r}: {exc}")
                continue
            table[key] = route  # a later duplicate wins (constmap)
        if problems:
            raise ConfigError(problems)
        return cls(table)

    def lookup(self, domain: str) -> Route | None:
        """The route for *domain*: full name, each ".suffix", then ""; None = use MX."""
        domain = domain_key(domain)
        for key in _candidate_keys(domain):
            if key in self._table:
                return self._table[key]
        return None

    def __len__(self) -> int:
        return len(self._table)

    def __repr__(self) -> str:
        return f"SmtpRoutes({dict(self._table)!r})"


def _candidate_keys(domain: str) -> list[str]:
    """qmail-remote's order: the whole host, then from each '.' on, then the empty key."""
    keys = [domain]
    keys.extend(domain[i:] for i, char in enumerate(domain) if char == ".")
    keys.append("")
    return keys


def _parse_line(line: str) -> tuple[str, Route | None]:
    key, colon, rest = line.partition(":")
    if not colon:
        raise ValueError("no ':' (expected domain:relay[:port])")
    if any(char.isspace() for char in key):
        raise ValueError("blank inside the domain")
    relay, port_text = _split_relay(rest)
    if not relay:
        if port_text:
            raise ValueError("a port without a relay")
        return domain_key(key), None
    _check_relay(relay)
    return domain_key(key), Route(relay=relay, port=_parse_port(port_text))


def _split_relay(rest: str) -> tuple[str, str]:
    """``relay[:port]``; a bracketed literal may itself contain colons (IPv6)."""
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            raise ValueError("'[' without ']'")
        relay, after = rest[: end + 1], rest[end + 1 :]
        if after and not after.startswith(":"):
            raise ValueError(f"junk after {relay}")
        return relay, after[1:]
    relay, _, port_text = rest.partition(":")
    return relay, port_text


def _check_relay(relay: str) -> None:
    if relay.startswith("["):
        literal_address(relay)  # raises ValueError when the literal is not an address
    elif DOTTED_QUAD.fullmatch(relay):
        ipaddress.IPv4Address(relay)
    elif not _HOST_NAME.fullmatch(relay):
        raise ValueError(f"{relay!r} is not a host name or an IP address")


def _parse_port(text: str) -> int | None:
    if not text:
        return None
    if not text.isascii() or not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"port {text!r} is not a number from 1 to 65535")
    return int(text)
