"""ARC chain validation (RFC 8617 section 5.2) with dkimpy's ``arc_verify``.

The chain's validation status (cv) is pass, fail or none (no ARC sets); a DNS failure
while fetching a key is temperror rather than a fail.  Recorded in the
Authentication-Results header only: no policy depends on it (we do not yet trust any
sealer's verdicts, so it never overrides DMARC).
"""

from __future__ import annotations

from dataclasses import dataclass

import dkim

from qtoaster.mailauth.dkimverify import DkimTxt
from qtoaster.mailauth.dnsquery import DnsTemporary


@dataclass(frozen=True, slots=True)
class ArcResult:
    result: str  # pass, fail, none, temperror
    reason: str = ""


def verify_arc(message: bytes, dnsfunc: DkimTxt) -> ArcResult:
    head = message[: message.find(b"\n\n") + 1 or len(message)]
    if b"arc-seal:" not in head.lower():
        return ArcResult("none")
    try:
        cv, _results, reason = dkim.arc_verify(message, dnsfunc=dnsfunc)
    except DnsTemporary as exc:
        return ArcResult("temperror", str(exc))
    except Exception as exc:  # hostile input: a result, never a crash
        return ArcResult("fail", f"unusable: {exc}")
    status = (cv or b"none").decode("ascii", "replace").lower()
    return ArcResult(status if status in ("pass", "fail", "none") else "fail", str(reason))
