"""rblsmtpd's decision: is this client blocked, and with which reply? (spec 1, rblsmtpd(1))

Follows ucspi-tcp's rblsmtpd.c (0.88 and the IPv6 edition 0.99a):

- ``RBLSMTPD`` set and non-empty: blocked with its text (a leading ``-`` is removed and
  means 553, else 451); set and empty: never blocked; unset: the sources are asked.
- Sources are tried in order until one decides (``config.endpoints.parse_sources`` puts the
  anti-RBL zones first, the usual ``rblsmtpd -a ... -r ...`` order).  An RBL source
  (``-r zone``) lists ``a.b.c.d`` when ``d.c.b.a.zone`` has a TXT record, whose strings
  (all records, concatenated, as djbdns' dns_txt does) are the message; a TXT with no text lists
  nothing.  ``-r zone:text`` (0.88's fixed-message form) lists on an A record instead and
  answers *text* with ``%IP%`` replaced by the client's address.  An anti-RBL source
  (``-a zone``) anti-lists on an A record (for an IPv6 client also AAAA): never blocked.
  IPv6 clients use the reversed nibbles (RFC 5782 2.4); an IPv4-mapped client is IPv4.
- ``-b`` (``bounce``): an RBL hit answers 553 instead of 451.  Default ``-C`` (fail open):
  a lookup that fails temporarily means "not listed" for an RBL source and "anti-listed"
  for an anti-RBL source; ``-c`` (``fail_closed``) inverts both and blocks with
  "temporary RBL lookup error".  After any temporary failure the code is 451 even with -b.
- An address answer in 127.255.255.0/24 is a DNSxL's operational error (Spamhaus' codes
  for a refused or rate-limited resolver, no listing in RFC 5782's sense): it neither lists
  nor anti-lists, and is logged.  For TXT sources the A record is asked alongside the TXT.
- The message is cut to 200 bytes and every byte outside 32..126 becomes ``?``.

Left out: ``-i`` (interrogation mode), ``-w``/``-W`` (greeting delay: the tarpit's job).
``-B`` and ``-C`` are the defaults (``bounce=False``, ``fail_closed=False``).

Invariants: a DNS failure never blocks unless ``fail_closed``; a whole decision takes at
most ``deadline`` seconds (sources are asked at once, decided in order; what has not
answered by then counts as a temporary failure); one LRU cache serves every decision.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdata
import dns.resolver
from dns.rdtypes.ANY.TXT import TXT
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA

from qtoaster.config.endpoints import Source
from qtoaster.core.reply import Reply
from qtoaster.net.resolver import make_resolver

log = logging.getLogger("qtoaster.policy.rbl")

ENV = "RBLSMTPD"
MAX_TEXT = 200
TEMPORARY_TEXT = "temporary RBL lookup error"  # rblsmtpd -c
_ERROR_NET = ipaddress.ip_network("127.255.255.0/24")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Block:
    """A blocked client: ``code`` 451 or 553, ``text`` already cleaned, who decided it."""

    code: int
    text: str
    source: str  # "RBLSMTPD" or the zone that listed the client

    @property
    def reply(self) -> Reply:
        return Reply(self.code, self.text)


class _Found(enum.Enum):
    HIT = "hit"
    MISS = "miss"
    SOFT = "soft"  # a temporary failure (or no answer before the deadline)
    ERROR = "error"  # an address in 127.255.255.0/24: the DNSxL refuses to answer


@dataclass(frozen=True, slots=True)
class _Answer:
    found: _Found
    text: bytes = b""


_SOFT = _Answer(_Found.SOFT)
_MISS = _Answer(_Found.MISS)


def client_address(remote_ip: str) -> IPAddress | None:
    """The address rblsmtpd looks up: IPv4-mapped IPv6 as IPv4; None if no address."""
    try:
        address = ipaddress.ip_address(remote_ip.partition("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # rblsmtpd strips the ::ffff: prefix
    return address


def reversed_name(address: IPAddress) -> str:
    """``d.c.b.a`` or the 32 reversed nibbles (RFC 5782 2.1, 2.4), without a zone."""
    # reverse_pointer ends in "in-addr.arpa" or "ip6.arpa": two labels either way.
    return address.reverse_pointer.rsplit(".", 2)[0]


def clean(text: bytes) -> str:
    """The first 200 bytes, each byte outside 32..126 as ``?`` (rblsmtpd.c)."""
    return "".join(chr(b) if 32 <= b <= 126 else "?" for b in text[:MAX_TEXT])


def _bytes(text: str) -> bytes:
    """A setting's or the environment's text as the bytes rblsmtpd would see."""
    return text.encode("utf-8", "surrogateescape")


def env_decision(env: Mapping[str, str]) -> tuple[bool, Block | None]:
    """(decided, block) from RBLSMTPD alone; decided is False when it is unset."""
    value = env.get(ENV)
    if value is None:
        return False, None
    if not value:
        return True, None
    if value.startswith("-"):
        return True, Block(553, clean(_bytes(value[1:])), ENV)
    return True, Block(451, clean(_bytes(value)), ENV)


class Rbl:
    """Decides for one client; one instance (and one DNS cache) per worker."""

    def __init__(
        self,
        sources: Sequence[Source],
        *,
        nameservers: Sequence[str] = (),
        bounce: bool = False,
        fail_closed: bool = False,
        timeout: float = 2.0,
        deadline: float = 5.0,
    ) -> None:
        self.sources = tuple(sources)
        self._bounce = bounce
        self._fail_closed = fail_closed
        self._deadline = deadline
        self._resolver = make_resolver(nameservers, timeout=timeout, lifetime=deadline)

    async def decide(self, remote_ip: str, env: Mapping[str, str]) -> Block | None:
        """None: let the client through; a Block: run the rblsmtpd dialog instead."""
        decided, block = env_decision(env)
        if decided or not self.sources:
            return block
        address = client_address(remote_ip)
        if address is None:
            log.warning("rbl client address %r is no IP address, not looked up", remote_ip)
            return None
        return await self._lookup(address)

    async def _lookup(self, address: IPAddress) -> Block | None:
        loop = asyncio.get_running_loop()
        end = loop.time() + self._deadline
        tasks = [asyncio.ensure_future(self._ask(source, address)) for source in self.sources]
        try:
            fold = _Fold(self._bounce, self._fail_closed)
            for source, task in zip(self.sources, tasks, strict=True):
                done, _ = await asyncio.wait({task}, timeout=max(end - loop.time(), 0.0))
                answer = task.result() if done else _SOFT
                if answer.found is _Found.SOFT:
                    log.warning("rbl %s for %s: temporary DNS failure", source.zone, address)
                if fold.add(source, answer):
                    return fold.block()
            return None
        finally:
            for task in tasks:
                task.cancel()  # the rest is no longer needed; leave no task behind
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _ask(self, source: Source, address: IPAddress) -> _Answer:
        try:
            name = dns.name.from_text(f"{reversed_name(address)}.{source.zone}")
        except dns.exception.DNSException:  # too long a name: nobody can list it
            return _MISS
        if source.anti or source.message is not None:
            answer = await self._addresses(name, address.version == 6, source.zone)
            if answer.found is _Found.HIT and source.message is not None:
                ip = _bytes(str(address))
                return _hit(_bytes(source.message).replace(b"%IP%", ip))
            return answer
        (txt_status, txt), addresses = await asyncio.gather(
            self._query(name, "TXT"), self._addresses(name, False, source.zone)
        )
        if addresses.found is _Found.ERROR:
            return addresses
        if txt_status is _Found.SOFT:
            return _SOFT
        return _hit(b"".join(s for r in txt if isinstance(r, TXT) for s in r.strings))

    async def _addresses(self, name: dns.name.Name, ipv6: bool, zone: str) -> _Answer:
        """A (and AAAA for an IPv6 client) of *name*: HIT, MISS, ERROR or SOFT."""
        queries = [self._query(name, "A")] + ([self._query(name, "AAAA")] if ipv6 else [])
        found = await asyncio.gather(*queries)
        addresses = [
            ipaddress.ip_address(r.address)
            for _, records in found
            for r in records
            if isinstance(r, (A, AAAA))
        ]
        if any(a not in _ERROR_NET for a in addresses):
            return _Answer(_Found.HIT)
        if addresses:
            log.warning("rbl %s answered %s: an operational error, ignored", zone, addresses[0])
            return _Answer(_Found.ERROR)
        if any(status is _Found.SOFT for status, _ in found):
            return _SOFT
        return _MISS

    async def _query(
        self, name: dns.name.Name, rdtype: str
    ) -> tuple[_Found, list[dns.rdata.Rdata]]:
        try:
            answer = await self._resolver.resolve(name, rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return _Found.MISS, []
        except (dns.exception.DNSException, OSError):
            # SERVFAIL/REFUSED everywhere, timeouts, malformed answers: try again later.
            return _Found.SOFT, []
        return _Found.HIT, list(answer)


def _hit(text: bytes) -> _Answer:
    # rblsmtpd.c: "if (text.len)": an empty message lists nothing.
    return _Answer(_Found.HIT, text) if text else _MISS


class _Fold:
    """rblsmtpd.c's ``decision`` and ``flagmustnotbounce``, fed one source at a time."""

    def __init__(self, bounce: bool, fail_closed: bool) -> None:
        self._bounce = bounce
        self._fail_closed = fail_closed
        self._must_not_bounce = False
        self._text = b""
        self._zone = ""
        self._blocked = False

    def add(self, source: Source, answer: _Answer) -> bool:
        """Take one source's answer; True once the decision is made."""
        if answer.found is _Found.SOFT:
            self._must_not_bounce = True
            if source.anti:
                return not self._fail_closed  # fail open: as if anti-listed
            if self._fail_closed:
                return self._block(source.zone, TEMPORARY_TEXT.encode())
            return False
        if answer.found is not _Found.HIT:
            return False
        if source.anti:
            return True
        return self._block(source.zone, answer.text)

    def _block(self, zone: str, text: bytes) -> bool:
        self._blocked, self._zone, self._text = True, zone, text
        return True

    def block(self) -> Block | None:
        if not self._blocked:
            return None
        code = 553 if self._bounce and not self._must_not_bounce else 451
        return Block(code, clean(self._text), self._zone)
