"""Greylisting's rules, without I/O: the triplet's state machine, the client's network,
the auto-whitelist and the pass list (control/greylistpass).  The store
(``policy/state.py``) keeps the rows; the check (``policy/checks/greylist.py``) asks.

The triplet is (client network, envelope sender, recipient), postgrey's: the network is
the client address cut to ``ipv4_prefix`` bits (default /24) or ``ipv6_prefix`` (/64), so
a sender whose retries come from another address of the same farm is not greylisted
again; sender and recipient are compared without regard to case.

State machine of one triplet (:func:`decide`; times in seconds, settings
``delay``/``retry_window``/``max_age``):

- unknown, or a first try older than ``retry_window``, or passed but unused for
  ``max_age``: a (new) first try, greylisted, ``retry_in = delay``;
- first try less than ``delay`` ago: greylisted again, ``retry_in`` the rest of the delay;
- first try ``delay`` to ``retry_window`` ago: passes, and is a *retry* (the client's
  count goes up; ``auto_whitelist`` retries and the client is no longer greylisted);
- passed before: passes (``last_seen`` moves, so a triplet in use never expires).
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from qtoaster.config.limitsettings import GreylistSettings

PASS_FILE = "greylistpass"


@dataclass(frozen=True, slots=True)
class Triplet:
    first_seen: float
    last_seen: float
    passed: bool


@dataclass(frozen=True, slots=True)
class Decision:
    passes: bool
    entry: Triplet  # what the store keeps for the triplet now
    retry_in: float = 0.0  # greylisted: seconds until a retry is accepted
    retried: bool = False  # this try is the retry that passed: counts for the auto-whitelist
    whitelisted: bool = False  # passed because the client is auto-whitelisted


def decide(entry: Triplet | None, now: float, settings: GreylistSettings) -> Decision:
    """The answer to one try of a triplet whose stored state is ``entry``."""
    stale = entry is None or (
        now - entry.last_seen > settings.max_age
        if entry.passed
        else now - entry.first_seen > settings.retry_window
    )
    if stale or entry is None:
        return Decision(False, Triplet(now, now, False), float(settings.delay))
    if entry.passed:
        return Decision(True, Triplet(entry.first_seen, now, True))
    waited = now - entry.first_seen
    if waited < settings.delay:
        return Decision(False, Triplet(entry.first_seen, now, False), settings.delay - waited)
    return Decision(True, Triplet(entry.first_seen, now, True), retried=True)


def whitelisted(count: int, last_seen: float, now: float, settings: GreylistSettings) -> bool:
    """A client with ``count`` passed retries, last seen at ``last_seen``, is not greylisted."""
    threshold = settings.auto_whitelist
    return bool(threshold) and count >= threshold and now - last_seen <= settings.max_age


def client_network(ip: str, settings: GreylistSettings) -> str:
    """The triplet's client part: ``192.0.2.0/24``, ``2001:db8:1:2::/64``; an address that
    does not parse is taken whole (remembered: a busy client is parsed once)."""
    return _network(ip, settings.ipv4_prefix, settings.ipv6_prefix)


@functools.lru_cache(maxsize=4096)
def _network(ip: str, ipv4_prefix: int, ipv6_prefix: int) -> str:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    prefix = ipv4_prefix if address.version == 4 else ipv6_prefix
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


@dataclass(frozen=True, slots=True)
class PassList:
    """control/greylistpass: who is never greylisted.  One entry a line, ``#`` comments:

    - ``client 192.0.2.0/24`` (or one address; IPv6 too): the client's address;
    - ``sender user@example.com`` or ``sender example.com`` (every address of the domain);
    - ``recipient user@example.org`` or ``recipient example.org``.
    """

    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    senders: frozenset[str] = frozenset()
    recipients: frozenset[str] = frozenset()

    def passes(self, ip: str, sender: str, recipient: str) -> bool:
        if self.networks:
            try:
                address = ipaddress.ip_address(ip)
            except ValueError:
                address = None
            if address is not None and any(address in net for net in self.networks):
                return True
        return _listed(sender, self.senders) or _listed(recipient, self.recipients)

    @classmethod
    def parse(cls, text: str, source: str = PASS_FILE) -> PassList:
        """The list; ValueError naming the first bad line."""
        networks = []
        senders: set[str] = set()
        recipients: set[str] = set()
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            kind, _, value = line.partition(" ")
            value = value.strip().lower()
            if kind == "client" and value:
                try:
                    networks.append(ipaddress.ip_network(value, strict=False))
                except ValueError:
                    raise ValueError(f"{source} line {number}: bad address {value!r}") from None
            elif kind in ("sender", "recipient") and value and " " not in value:
                (senders if kind == "sender" else recipients).add(value.removeprefix("@"))
            else:
                raise ValueError(
                    f"{source} line {number}: expected 'client NET', 'sender ADDRESS|DOMAIN'"
                    f" or 'recipient ADDRESS|DOMAIN', not {line!r}"
                )
        return cls(tuple(networks), frozenset(senders), frozenset(recipients))

    @classmethod
    def load(cls, control_dir: Path) -> PassList:
        """control/greylistpass, or an empty list when there is none."""
        try:
            text = (control_dir / PASS_FILE).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return cls()
        return cls.parse(text)


def _listed(address: str, entries: frozenset[str]) -> bool:
    if not entries or not address:
        return False
    address = address.lower()
    return address in entries or address.rpartition("@")[2] in entries
