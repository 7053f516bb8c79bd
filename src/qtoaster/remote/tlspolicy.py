"""The TLS policy of a destination: none, opportunistic, MTA-STS enforce, or DANE.

Remote delivery asks `TransportSecurity.destination` once per message and domain delivered
by MX (an smtproutes route is the administrator's choice and gets only qmail-tls's rules),
then `host_policy` for each MX host, before connecting:

1. ``control/tlshosts/MX.pem`` (qmail-tls) stays mandatory TLS with its own CAs: an
   explicit local setting wins.
2. DANE (``remote/dane.py``) when on, the MX RRset is secure and the host has usable TLSA
   records: TLS mandatory, the certificate checked against the records.  DANE takes
   precedence over MTA-STS (RFC 8461 2).
3. MTA-STS (``remote/mtasts.py``) in ``enforce`` mode: an MX not matching the policy is
   refused before connecting; one that matches gets mandatory TLS with a certificate
   verified against the system CAs (and ``[remote] ca_file``) and naming the MX.  In
   ``testing`` mode both problems are only logged (``would refuse``).
4. Otherwise what qmail-tls says (opportunistic unless notlshosts/exhaustivelist).

Invariants: a refusal is a `Refusal` carrying a text that names the policy; a DNSSEC
lookup failure is a refusal (temporary), never a fall back to less TLS.
"""

from __future__ import annotations

import logging
import re
import ssl
import warnings
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.verification import VerificationError

from qtoaster.remote.body import Body, chunks
from qtoaster.remote.dane import Dane, DaneFailure, check_chain, server_verifier
from qtoaster.remote.mtasts import MtaSts, StsPolicy
from qtoaster.tls.client import ClientTls, ClientTlsMode, ClientTlsPolicy

log = logging.getLogger("qtoaster.remote")

REQUIRETLS_LABEL = "the REQUIRETLS option of the message"
_TLS_REQUIRED_NO = re.compile(rb"^TLS-Required:[ \t]*No[ \t]*$", re.IGNORECASE | re.MULTILINE)
_HEADER_SCAN = 64 * 1024


@dataclass(frozen=True, slots=True)
class Destination:
    domain: str
    mx_secure: bool  # DANE may apply (its MX RRset validated)
    sts: StsPolicy | None

    @property
    def kind(self) -> str:
        if self.mx_secure:
            return "dane"
        if self.sts is not None and self.sts.mode != "none":
            return f"mta-sts {self.sts.mode}"
        return "opportunistic"


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str  # names the policy; the deferral text adds "(#4.7.5)"


class TransportSecurity:
    """MTA-STS and DANE for remote delivery; either may be None (off)."""

    def __init__(
        self,
        tls: ClientTls,
        mtasts: MtaSts | None,
        dane: Dane | None,
        cafile: str | None = None,
    ) -> None:
        self._tls = tls
        self._mtasts = mtasts
        self._dane = dane
        self._cafile = cafile
        self.cafile = cafile  # also what REQUIRETLS verifies against (remote/agent.py)
        self._anchors: list[x509.Certificate] | None = None

    async def destination(self, domain: str) -> Destination:
        """The domain's policies; raises DaneFailure when its MX cannot be validated."""
        mx_secure = await self._dane.mx_secure(domain) if self._dane is not None else False
        sts = await self._mtasts.policy(domain) if self._mtasts is not None else None
        return Destination(domain, mx_secure, sts)

    async def host_policy(
        self, dest: Destination | None, host: str, base: ClientTlsPolicy
    ) -> ClientTlsPolicy | Refusal:
        """What TLS *host* (an MX of dest) gets, or why it may not be used."""
        if dest is None or (base.mode is ClientTlsMode.REQUIRED and not base.label):
            return base  # smtproutes, or a tlshosts file
        if dest.mx_secure and self._dane is not None:
            try:
                records = await self._dane.tlsa(host)
            except DaneFailure as exc:
                return Refusal(f"DANE: {exc}")
            if records:
                label = f"DANE TLSA records of {host}"
                return self._tls.unverified(
                    host, label, lambda chain: check_chain(records, chain, host)
                )
        sts = dest.sts
        if sts is None or sts.mode == "none":
            return base
        if sts.mode == "enforce":
            if not sts.allows(host):
                return Refusal(f"{host} is not an MX host of the {sts.label}")
            return self._tls.verified(host, f"the {sts.label}", self._cafile)
        if not sts.allows(host):
            log.info("remote %s: the %s would refuse it: not an MX host of it", host, sts.label)
        if base.context is None:
            return base
        return ClientTlsPolicy(
            base.mode,
            base.context,
            base.file,
            base.server_hostname,
            lambda chain: self._testing(sts, host, chain),
            "",
        )

    def _testing(self, sts: StsPolicy, host: str, chain: list[bytes]) -> None:
        """MTA-STS testing mode: log what enforce would have refused, accept anyway."""
        problem = self._pkix_problem(chain, host)
        if problem:
            log.info("remote %s: the %s would refuse it: %s", host, sts.label, problem)

    def _pkix_problem(self, chain_der: list[bytes], host: str) -> str | None:
        try:
            chain = [x509.load_der_x509_certificate(der) for der in chain_der]
            if not chain:
                return "no certificate"
            server_verifier(self._pkix_anchors(), host).verify(chain[0], chain[1:])
        except (VerificationError, ValueError, OSError) as exc:
            return f"certificate not valid for {host}: {exc}"
        return None

    def _pkix_anchors(self) -> list[x509.Certificate]:
        """The system CAs and ``[remote] ca_file``, read once (testing mode only)."""
        if self._anchors is None:
            certs: list[x509.Certificate] = []
            for path in (ssl.get_default_verify_paths().cafile, self._cafile):
                if path and Path(path).is_file():
                    with warnings.catch_warnings():  # a system CA with a zero serial number
                        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
                        certs += x509.load_pem_x509_certificates(Path(path).read_bytes())
            self._anchors = certs
        return self._anchors


def tls_required_no(body: Body) -> bool:
    """The header section (its first 64 KiB) has ``TLS-Required: No`` (RFC 8689 5): the
    sender asks that MTA-STS and DANE failures not stop delivery."""
    try:
        head = next(chunks(body, _HEADER_SCAN), b"")
    except OSError:
        return False
    end = head.find(b"\n\n")
    header = head if end < 0 else head[: end + 1]
    return _TLS_REQUIRED_NO.search(header.replace(b"\r\n", b"\n")) is not None
