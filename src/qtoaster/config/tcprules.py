"""tcp.smtp: tcprules(1) text rules, parsed once and matched per connection (spec 1).

Format (ucspi-tcp tcprules(1)): one rule per line, ``ADDRESS:INSTRUCTIONS`` with no
extra spaces; lines starting with ``#`` and blank lines are ignored; trailing blanks
are stripped.  INSTRUCTIONS are ``allow`` or ``deny`` followed by any number of
``,VAR=<q>value<q>`` where ``<q>`` is any character repeated to close the value
(``RELAYCLIENT=""``, ``RELAYCLIENT=/@fix.me/``).

Address forms accepted (docs/configuration.md has the full table):

- ``""`` (empty: every client), ``=`` (any client whose host name is known),
  ``=host``, ``=.suffix``, ``info@ip``, ``info@=host``;
- IPv4: exact ``1.2.3.4``, prefixes ending in a dot ``127.`` / ``10.1.``, a range in
  one octet ``18.23.0.1-22`` / ``10.1-5.`` (expanded as tcprules does), CIDR
  ``10.0.0.0/8`` or ``127.0/8`` (ucspi-tcp6);
- IPv6: any exact form (``::1``, ``2001:db8::25``; compared after normalisation),
  prefixes of whole groups ending in a colon ``2001:db8:``, CIDR ``2001:db8::/32``.

The instructions start after the FIRST colon that is followed by ``allow`` or
``deny``, so IPv6 addresses need no quoting (``::1:allow``).

Matching follows tcpserver's rules.c order, first hit wins: info@ip, info@=host, ip,
=host, IPv4 dot-prefixes longest first, CIDR/IPv6-prefix longest first, =.suffix
longest first, ``=``, then the empty rule.  If two rules have the same address the
first one in the file wins (tcprules' cdb keeps both; lookups return the first).
An IPv4-mapped IPv6 client (``::ffff:1.2.3.4``) is matched as its IPv4 address.

Stricter than tcprules: text that tcprules would silently store but that can never
match (``localhost:allow``, a line without a colon, ``127.0.0:allow``) is an error,
so ``qtoaster config check`` reports it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from qtoaster.config.control import ascii_lower
from qtoaster.core.errors import ConfigError, FormatError

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
_IPV4_EXACT = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}", re.ASCII)
_IPV4_PREFIX = re.compile(rf"(?:{_OCTET}\.){{1,3}}", re.ASCII)
_IPV4_PARTIAL = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{0,3}}", re.ASCII)
_RANGE = re.compile(r"(?P<head>(?:[^.]*\.)*?)(?P<bot>[0-9]{1,3})-(?P<top>[0-9]{1,3})(?P<tail>.*)")
_V6_GROUP_PREFIX = re.compile(r"(?:[0-9A-Fa-f]{1,4}:){1,7}", re.ASCII)
_PREFIX_LEN = re.compile(r"[0-9]{1,3}", re.ASCII)
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_INSTRUCTION = re.compile(r":(?=allow|deny)")


@dataclass(frozen=True, slots=True)
class Decision:
    allow: bool
    env: Mapping[str, str]
    rule: str


NO_RULE = Decision(allow=True, env=MappingProxyType({}), rule="<none>")


class _Bad(FormatError):
    """One bad line; collected into a ConfigError by parse_tcprules."""


class TcpRules:
    """Parsed rules: a table from lookup key to Decision, queried in tcpserver's order."""

    __slots__ = ("_table", "_v4_cidr", "_v6_cidr")

    def __init__(self, table: Mapping[str, Decision]) -> None:
        self._table = dict(table)
        self._v4_cidr = any(k.startswith("_") for k in self._table)
        self._v6_cidr = any(k.startswith("^") for k in self._table)

    def __len__(self) -> int:
        return len(self._table)

    def match(
        self, remote_ip: str, remote_host: str | None = None, remote_info: str | None = None
    ) -> Decision:
        """The first rule that applies to this client; tcpserver's default (allow) if none."""
        for key in self._lookup_keys(remote_ip, remote_host or None, remote_info):
            decision = self._table.get(key)
            if decision is not None:
                return decision
        return NO_RULE

    def _lookup_keys(self, ip: str, host: str | None, info: str | None) -> Iterator[str]:
        addr = _parse_ip(ip)
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        ipkey = ip if addr is None else addr.compressed
        host = None if host is None else ascii_lower(host)
        if info is not None:
            yield f"{info}@{ipkey}"
            if host is not None:
                yield f"{info}@={host}"
        yield ipkey
        if host is not None:
            yield f"={host}"
        if not isinstance(addr, ipaddress.IPv6Address):
            for end in range(len(ipkey), 0, -1):
                if ipkey[end - 1] == ".":
                    yield ipkey[:end]
        if addr is not None and (self._v6_cidr if addr.version == 6 else self._v4_cidr):
            mark, bits = _bits(addr)
            for length in range(len(bits), 0, -1):
                yield mark + bits[:length]
        if host is not None:
            for i, ch in enumerate(host):
                if ch == ".":
                    yield f"={host[i:]}"
            yield "="
        yield ""


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def _bits(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> tuple[str, str]:
    """CIDR keys: "_" + bits for IPv4, "^" + bits for IPv6 (as ucspi-tcp6 stores them)."""
    width = addr.max_prefixlen
    return ("_" if width == 32 else "^"), format(int(addr), f"0{width}b")


def _cidr_key(address: str) -> str:
    text, _, length_text = address.partition("/")
    if not _PREFIX_LEN.fullmatch(length_text):
        raise _Bad(f"bad prefix length {length_text!r} in {address!r}")
    length = int(length_text)
    if ":" in text:
        addr6 = _parse_ip(text)
        if not isinstance(addr6, ipaddress.IPv6Address) or "%" in text:
            raise _Bad(f"bad IPv6 network {address!r}")
        if not 1 <= length <= 128:
            raise _Bad(f"prefix length must be 1..128 in {address!r} (use the empty rule for all)")
        return "^" + _bits(addr6)[1][:length]
    if not _IPV4_PARTIAL.fullmatch(text):
        raise _Bad(f"bad IPv4 network {address!r}")
    octets = text.split(".")
    if not 1 <= length <= 8 * len(octets):
        raise _Bad(f"prefix length of {address!r} must be 1..{8 * len(octets)}")
    addr4 = ipaddress.IPv4Address(".".join(octets + ["0"] * (4 - len(octets))))
    return "_" + _bits(addr4)[1][:length]


def _ipv6_key(address: str) -> str:
    if "::" not in address and _V6_GROUP_PREFIX.fullmatch(address):
        groups = address[:-1].split(":")
        bits = "".join(format(int(g, 16), "016b") for g in groups)
        return "^" + bits
    addr = _parse_ip(address)
    if not isinstance(addr, ipaddress.IPv6Address) or "%" in address:
        raise _Bad(f"bad IPv6 address or prefix {address!r}")
    if addr.ipv4_mapped is not None:
        raise _Bad(f"write the IPv4 address {addr.ipv4_mapped} instead of {address!r}")
    return addr.compressed


def _ip_keys(address: str) -> list[str]:
    """Keys for a rule without ``=`` or ``@``: IPv4/IPv6 exact, prefix, range or CIDR."""
    if "/" in address:
        return [_cidr_key(address)]
    if ":" in address:
        return [_ipv6_key(address)]
    if "-" in address:
        return _range_keys(address)
    if _IPV4_EXACT.fullmatch(address) or _IPV4_PREFIX.fullmatch(address):
        return [address]
    raise _Bad(
        f"{address!r} is not an IPv4 address, a prefix ending in '.', a range, "
        "an IPv6 address or prefix, a CIDR network, =host or info@ip"
    )


def _range_keys(address: str) -> list[str]:
    """``18.23.0.1-22`` -> 18.23.0.1 ... 18.23.0.22; ``10.1-5.`` -> 10.1. ... 10.5."""
    found = _RANGE.fullmatch(address)
    if found is None or "-" in found["tail"]:
        raise _Bad(f"bad address range {address!r}")
    bot, top = int(found["bot"]), int(found["top"])
    if bot > top or top > 255:
        raise _Bad(f"bad address range {address!r} (need low <= high <= 255)")
    keys = [f"{found['head']}{n}{found['tail']}" for n in range(bot, top + 1)]
    for key in keys:
        if not (_IPV4_EXACT.fullmatch(key) or _IPV4_PREFIX.fullmatch(key)):
            raise _Bad(f"bad address range {address!r}")
    return keys


def _address_keys(address: str) -> list[str]:
    if address == "":
        return [""]
    if address.startswith("="):
        return ["=" + ascii_lower(address[1:])]
    info, sep, host = address.partition("@=")
    if sep:
        return [f"{info}@={ascii_lower(host)}"]
    if "=" in address:
        raise _Bad(f"misplaced '=' in {address!r} (host rules are =host or info@=host)")
    info, at, ip = address.partition("@")
    if at:
        if _IPV4_EXACT.fullmatch(ip):
            return [f"{info}@{ip}"]
        addr = _parse_ip(ip)
        if isinstance(addr, ipaddress.IPv6Address) and "%" not in ip:
            return [f"{info}@{addr.compressed}"]
        raise _Bad(f"{ip!r} in {address!r} is not an exact IP address")
    return _ip_keys(address)


def _instructions(address: str, text: str) -> Decision:
    """``allow``/``deny`` then ``,VAR=<q>value<q>``... (values may hold any character)."""
    allow = text.startswith("allow")
    rest = text[5:] if allow else text[4:]
    env: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        if rest[pos] != ",":
            raise _Bad(f"expected ',VAR=\"value\"' at {rest[pos:]!r}")
        eq = rest.find("=", pos)
        if eq < 0:
            raise _Bad(f'variable {rest[pos + 1 :]!r} has no value (write VAR="")')
        name = rest[pos + 1 : eq]
        if not _VAR_NAME.fullmatch(name):
            raise _Bad(f"bad variable name {name!r}")
        if eq + 1 >= len(rest):
            raise _Bad(f'{name}= has no value (write {name}="")')
        quote = rest[eq + 1]
        end = rest.find(quote, eq + 2)
        if end < 0:
            raise _Bad(f"value of {name} is not closed by {quote!r}")
        env[name] = rest[eq + 2 : end]  # later assignments win, as tcpserver's env() does
        pos = end + 1
    return Decision(allow=allow, env=MappingProxyType(env), rule=address)


def _parse_line(line: str) -> tuple[list[str], Decision]:
    if line.endswith("\r"):
        raise _Bad("line ends with a carriage return (DOS line endings?)")
    split = _INSTRUCTION.search(line)
    if split is None:
        if ":" not in line:
            raise _Bad("missing ':' between address and instructions")
        raise _Bad("instructions must begin with allow or deny")
    address = line[: split.start()]
    if any(ch.isspace() for ch in address):
        raise _Bad(f"spaces in address {address!r} (tcprules allows no extra spaces)")
    decision = _instructions(address, line[split.end() :])
    return _address_keys(address), decision


def parse_tcprules(text: str, source: str = "tcp.smtp") -> TcpRules:
    """Parse rules text; ConfigError with ``SOURCE:LINE: message`` for every bad line."""
    table: dict[str, Decision] = {}
    problems: list[str] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        if raw.startswith("#"):
            continue
        line = raw.rstrip(" \t")
        if not line:
            continue
        try:
            keys, decision = _parse_line(line)
        except _Bad as bad:
            problems.append(f"{source}:{number}: {bad}")
            continue
        for key in keys:
            table.setdefault(key, decision)  # first rule for an address wins
    if problems:
        raise ConfigError(problems)
    return TcpRules(table)


def load_tcprules(path: Path) -> TcpRules:
    """Read and parse a rules file; a missing file allows everyone with no variables."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return TcpRules({})
    except OSError as exc:
        raise ConfigError([f"{path.name}: unable to read: {exc.strerror or exc}"]) from exc
    return parse_tcprules(raw.decode("utf-8", "surrogateescape"), source=path.name)
