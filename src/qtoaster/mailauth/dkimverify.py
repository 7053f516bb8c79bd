"""DKIM verification (RFC 6376, RFC 8463) of every DKIM-Signature of a message, with dkimpy.

Each signature gets its own result with its ``d=`` and ``s=`` (and the start of ``b=``,
RFC 6008's header.b): pass, fail (a signature that does not verify, a key that is
missing or revoked), permerror (a signature or key that cannot be used), temperror (the
key could not be looked up: DNS gave no answer).  dkimpy is pure Python and its DNS is
blocking: only ever called from mailauth's own threads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import dkim
from dkim.util import InvalidTagValueList, parse_tag_value

from qtoaster.mailauth.dnsquery import DnsTemporary

DkimTxt = Callable[..., bytes | None]  # dkimpy's dnsfunc(name: bytes, timeout=...)


@dataclass(frozen=True, slots=True)
class DkimResult:
    result: str  # pass, fail, neutral, permerror, temperror
    domain: str  # d=
    selector: str  # s=
    b: str = ""  # the first characters of b=, to tell signatures of one domain apart
    reason: str = ""


def signature_count(message: bytes) -> int:
    return len(_signatures(message))


def _signatures(message: bytes) -> list[bytes]:
    try:
        _headers, _body = dkim.rfc822_parse(message)
    except Exception:
        return []
    return [value for name, value in _headers if name.lower() == b"dkim-signature"]


def _tags(value: bytes) -> dict[bytes, bytes]:
    try:
        return dict(parse_tag_value(value))
    except (InvalidTagValueList, ValueError, IndexError):
        return {}


def _text(value: bytes | None) -> str:
    return (value or b"").decode("ascii", "replace").strip()


def verify_dkim(message: bytes, dnsfunc: DkimTxt) -> list[DkimResult]:
    """One result per DKIM-Signature, topmost first; [] for an unsigned message."""
    signatures = _signatures(message)
    if not signatures:
        return []
    verifier = dkim.DKIM(message, minkey=1024)
    results: list[DkimResult] = []
    for index, value in enumerate(signatures):
        tags = _tags(value)
        domain, selector = _text(tags.get(b"d")).lower(), _text(tags.get(b"s"))
        b = "".join(_text(tags.get(b"b")).split())[:8]
        try:
            ok = verifier.verify(idx=index, dnsfunc=dnsfunc)
            outcome = DkimResult("pass" if ok else "fail", domain, selector, b)
        except DnsTemporary as exc:
            outcome = DkimResult("temperror", domain, selector, b, str(exc))
        except dkim.ValidationError as exc:
            # A body hash that does not match is a signature that fails (RFC 6376
            # 6.1.3), not an unusable one.
            verdict = "fail" if str(exc).startswith("body hash mismatch") else "permerror"
            outcome = DkimResult(verdict, domain, selector, b, str(exc)[:200])
        except dkim.DKIMException as exc:
            outcome = DkimResult("permerror", domain, selector, b, str(exc)[:200])
        except Exception as exc:  # dkimpy on hostile input: a result, never a crash
            outcome = DkimResult("permerror", domain, selector, b, f"unusable: {exc}")
        results.append(outcome)
    return results
