"""DANE for SMTP (RFC 7672): TLSA records of an MX host, looked up securely, and the match.

``Dane.mx_secure(domain)`` and ``Dane.tlsa(host)`` ask the configured resolver (``[dns]
nameservers``) with the AD bit set in the query (RFC 6840 5.7) and trust the AD bit of its
answers: DANE is on only when ``[remote] dane`` says that resolver validates DNSSEC.  RFC
7672 2.2: the MX RRset of the domain must be secure, then ``_25._tcp.HOST`` TLSA must be
secure; anything insecure (no AD) or no TLSA at all leaves the host to opportunistic TLS.

Usable records (RFC 7672 3.1): usage DANE-TA(2) or DANE-EE(3), selector Cert(0) or
SPKI(1), matching type Full(0), SHA2-256(1) or SHA2-512(2).  PKIX-TA(0) and PKIX-EE(1)
are unusable for SMTP (3.1.3).  With at least one usable record TLS is mandatory and
`check_chain` must accept the peer's certificates:

- DANE-EE: the leaf certificate (or its public key) matches; no name or date check (3.1.1).
- DANE-TA: a certificate the server sent matches, the leaf chains to it (signatures,
  dates) and names the MX host (3.1.2, 3.2.2).  The trust anchor must be in the chain the
  server sends (RFC 7671 5.2.2 asks servers to include it).

Invariants: a DNS failure (SERVFAIL, timeout) of a secure lookup is `DaneFailure`, a
deferral, never a silent downgrade; records are returned only from answers with AD set.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdata
import dns.resolver
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    ServerVerifier,
    Store,
    VerificationError,
)
from dns.rdtypes.ANY.TLSA import TLSA

from qtoaster.core.errors import DeliveryAttemptError
from qtoaster.net.resolver import make_resolver

log = logging.getLogger("qtoaster.remote")

DANE_TA, DANE_EE = 2, 3


class DaneFailure(DeliveryAttemptError):
    """A DNSSEC lookup failed (SERVFAIL, timeout): try later, never without DANE."""


@dataclass(frozen=True, slots=True)
class Tlsa:
    usage: int
    selector: int
    mtype: int
    data: bytes

    @property
    def usable(self) -> bool:
        return (
            self.usage in (DANE_TA, DANE_EE) and self.selector in (0, 1) and self.mtype in (0, 1, 2)
        )

    def matches(self, cert: x509.Certificate) -> bool:
        if self.selector == 0:
            blob = cert.public_bytes(serialization.Encoding.DER)
        else:
            blob = cert.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        if self.mtype == 1:
            blob = hashlib.sha256(blob).digest()
        elif self.mtype == 2:
            blob = hashlib.sha512(blob).digest()
        return blob == self.data

    def __str__(self) -> str:
        return f"{self.usage} {self.selector} {self.mtype} {self.data.hex()[:16]}..."


class Dane:
    """Secure lookups through the configured, validating resolver."""

    def __init__(
        self, nameservers: Sequence[str] = (), *, timeout: float = 5.0, lifetime: float = 30.0
    ) -> None:
        self._resolver = make_resolver(nameservers, timeout=timeout, lifetime=lifetime)
        # Ask for the AD bit (RFC 6840 5.7) with EDNS0 and DO, so the resolver validates.
        self._resolver.use_edns(0, dns.flags.DO, 1232)
        self._resolver.flags = dns.flags.RD | dns.flags.AD

    async def mx_secure(self, domain: str) -> bool:
        """True when the domain's MX RRset (or its denial) was validated (RFC 7672 2.2.1)."""
        return (await self._query(domain, "MX"))[0]

    async def tlsa(self, host: str, port: int = 25) -> tuple[Tlsa, ...]:
        """The usable TLSA records of *host*; () when insecure or none (opportunistic)."""
        secure, records = await self._query(f"_{port}._tcp.{host}", "TLSA")
        if not secure:
            return ()
        tlsa = tuple(
            Tlsa(r.usage, r.selector, r.mtype, bytes(r.cert))
            for r in records
            if isinstance(r, TLSA)
        )
        return tuple(t for t in tlsa if t.usable)

    async def _query(self, name: str, rdtype: str) -> tuple[bool, list[dns.rdata.Rdata]]:
        try:
            answer = await self._resolver.resolve(
                dns.name.from_text(name), rdtype, search=False, raise_on_no_answer=False
            )
        except dns.resolver.NXDOMAIN as exc:
            # A validated denial is secure too; the response carries its AD bit.
            responses = exc.kwargs.get("responses") or {}
            return any(_ad(r) for r in responses.values()), []
        except (dns.exception.DNSException, OSError) as exc:
            raise DaneFailure(f"DNSSEC lookup of {name} {rdtype} failed: {exc}") from None
        return _ad(answer.response), list(answer.rrset or [])


def _ad(response: dns.message.Message | None) -> bool:
    return response is not None and bool(response.flags & dns.flags.AD)


def check_chain(records: Sequence[Tlsa], chain_der: Sequence[bytes], host: str) -> str | None:
    """None when the peer's chain (leaf first, DER) satisfies *records*; else why not."""
    if not chain_der:
        return "no certificate provided"
    try:
        chain = [x509.load_der_x509_certificate(der) for der in chain_der]
    except ValueError as exc:
        return f"unparsable certificate: {exc}"
    leaf = chain[0]
    for record in records:
        if record.usage == DANE_EE and record.matches(leaf):
            return None
    for record in records:
        if record.usage != DANE_TA:
            continue
        for anchor in chain:
            if record.matches(anchor) and _chains_to(leaf, chain[1:], anchor, host):
                return None
    return "certificate does not match the TLSA records"


def _chains_to(
    leaf: x509.Certificate,
    intermediates: list[x509.Certificate],
    anchor: x509.Certificate,
    host: str,
) -> bool:
    if leaf == anchor:
        return False  # a DANE-TA record names an issuer, never the leaf itself
    try:
        server_verifier([anchor], host).verify(leaf, [c for c in intermediates if c != anchor])
    except (VerificationError, ValueError):
        return False
    return True


def server_verifier(anchors: Sequence[x509.Certificate], host: str) -> ServerVerifier:
    """A chain-and-name verifier for *host*: cryptography's Web PKI rules for CAs, and for
    the leaf only a subjectAltName naming *host* (what OpenSSL checks for MTA-STS; the Web
    PKI's other leaf extensions, such as an authority key id, are not required)."""
    leaf_policy = ExtensionPolicy.permit_all().require_present(
        x509.SubjectAlternativeName, Criticality.AGNOSTIC, None
    )
    return (
        PolicyBuilder()
        .store(Store(list(anchors)))
        .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=leaf_policy)
        .build_server_verifier(x509.DNSName(host))
    )
