"""Blocking DNS for the verifiers: TXT, A/AAAA, PTR and MX through one cached dnspython
resolver built from ``[dns] nameservers`` (``net/resolver.py``).

pyspf and dkimpy call DNS themselves, synchronously; they get the functions of a
:class:`Lookup`, which run only in mailauth's own threads (``verifier.py``), never on an
event loop.

Invariant: an answer that says the name or the type does not exist is empty; anything
else that gives no answer (timeout, SERVFAIL, no server) raises :class:`DnsTemporary`,
so a DNS failure is never taken for "no record" (a temperror, never a pass or a fail).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Sequence

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
import dns.reversename

from qtoaster.core.errors import TemporaryFailure
from qtoaster.net.resolver import make_sync_resolver


class DnsTemporary(TemporaryFailure):
    """A lookup gave no answer (timeout, SERVFAIL, REFUSED, no usable server)."""


class Lookup:
    def __init__(self, resolver: dns.resolver.Resolver) -> None:
        self._resolver = resolver

    @classmethod
    def build(cls, nameservers: Sequence[str], timeout: float) -> Lookup:
        return cls(make_sync_resolver(nameservers, timeout=timeout, lifetime=timeout))

    def _answer(self, name: str, rdtype: str) -> list[object]:
        try:
            answer = self._resolver.resolve(name, rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.name.LabelTooLong:
            return []
        except (dns.exception.DNSException, OSError) as exc:
            raise DnsTemporary(f"{rdtype} {name}: {exc}") from None
        return list(answer)

    def txt(self, name: str) -> list[bytes]:
        """The TXT records of ``name``, each one's strings joined."""
        return [b"".join(r.strings) for r in self._answer(name, "TXT")]  # type: ignore[attr-defined]

    def addresses(self, name: str) -> list[str]:
        found: list[str] = []
        for rdtype in ("A", "AAAA"):
            found += [r.address for r in self._answer(name, rdtype)]  # type: ignore[attr-defined]
        return found

    def ptr(self, ip: str) -> list[str]:
        name = dns.reversename.from_address(ip).to_text()
        return [r.target.to_text(True) for r in self._answer(name, "PTR")]  # type: ignore[attr-defined]

    # -- the library adapters ------------------------------------------------
    def dkim_txt(self, name: bytes, timeout: float = 5) -> bytes | None:
        """dkimpy's ``dnsfunc``: the first TXT record, or None."""
        records = self.txt(name.decode("ascii", "replace"))
        return records[0] if records else None

    def spf(
        self, name: str, qtype: str, strict: object = True, timeout: object = None
    ) -> Iterator[tuple[tuple[str, str], object]]:
        """pyspf's ``DNSLookup``: ``((name, type), value)`` in pyspf's value forms."""
        for rdata in self._answer(name, qtype):
            if qtype in ("A", "AAAA"):
                value: object = rdata.address  # type: ignore[attr-defined]
                if qtype == "AAAA":
                    value = ipaddress.IPv6Address(value).packed
            elif qtype == "MX":
                value = (rdata.preference, rdata.exchange.to_text(True))  # type: ignore[attr-defined]
            elif qtype == "PTR":
                value = rdata.target.to_text(True)  # type: ignore[attr-defined]
            elif qtype in ("TXT", "SPF"):
                value = tuple(rdata.strings)  # type: ignore[attr-defined]
            else:
                continue
            yield ((name, qtype), value)
