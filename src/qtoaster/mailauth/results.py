"""The Authentication-Results header (RFC 8601) and the header lines a message loses.

One header, authserv-id = control/me, with spf (MAIL FROM, and HELO when checked), one
dkim per signature (header.d, header.s, header.b), dmarc, arc and iprev, built with
authres.  :func:`forged_lines` finds what must not survive into the queue: any
Authentication-Results claiming our authserv-id (RFC 8601 section 5) and any copy of our
quarantine mark (:data:`MARK`), which only we may set.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import authres
import authres.arc
import authres.dmarc

from qtoaster.mailauth.arc import ArcResult
from qtoaster.mailauth.dkimverify import DkimResult
from qtoaster.mailauth.dmarc import DmarcResult
from qtoaster.mailauth.spf import SpfResult

# Our quarantine mark: "junk" (local delivery files the message in .Junk) or "tag".
MARK = b"X-Qtoaster-Quarantine"
HEAD_MAX = 256 << 10  # header bytes searched for forged lines (a longer header: the rest is body)


def authentication_results(
    authserv_id: str,
    *,
    spf: SpfResult | None,
    helo: SpfResult | None,
    dkim: Sequence[DkimResult],
    dmarc: DmarcResult | None,
    arc: ArcResult | None,
    iprev: tuple[str, str] | None,  # (result, client address)
) -> bytes:
    """The header line, folded, LF-terminated (the spool's line ending)."""
    results: list[authres.BaseAuthenticationResult] = []
    if spf is not None:
        results.append(
            authres.SPFAuthenticationResult(result=spf.result, smtp_mailfrom=_safe(spf.identity))
        )
    if helo is not None and helo.result != "none":
        results.append(
            authres.SPFAuthenticationResult(result=helo.result, smtp_helo=_safe(helo.identity))
        )
    if not dkim:
        results.append(authres.DKIMAuthenticationResult(result="none"))
    for signature in dkim:
        dkim_result = authres.DKIMAuthenticationResult(
            result=signature.result,
            header_d=_safe(signature.domain) or None,
            header_s=_safe(signature.selector) or None,
        )
        if signature.b:
            dkim_result.properties.append(
                authres.AuthenticationResultProperty("header", "b", _safe(signature.b))
            )
        results.append(dkim_result)
    if dmarc is not None:
        results.append(
            authres.dmarc.DMARCAuthenticationResult(
                result=dmarc.result,
                header_from=_safe(dmarc.from_domain) or None,
                policy=dmarc.policy if dmarc.result in ("pass", "fail") else None,
            )
        )
    if arc is not None:
        results.append(authres.arc.ARCAuthenticationResult(result=arc.result))
    if iprev is not None:
        results.append(
            authres.IPRevAuthenticationResult(result=iprev[0], policy_iprev=_safe(iprev[1]))
        )
    header = authres.AuthenticationResultsHeader(authserv_id=authserv_id, results=results)
    return _fold(str(header)).encode("utf-8", "replace") + b"\n"


_UNSAFE = re.compile(r"[^A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.@:\[\]]")


def _safe(value: str) -> str:
    """A property value as a token: whatever a sender put in it cannot break the header."""
    return _UNSAFE.sub("", value)[:255]


def _fold(line: str) -> str:
    head, sep, rest = line.partition("; ")
    if not sep:
        return line
    return head + ";\n\t" + rest.replace("; ", ";\n\t")


_FIELD = re.compile(rb"^([!-9;-~]+)[ \t]*:", re.ASCII)


def forged_lines(message: bytes, authserv_id: str) -> tuple[tuple[int, int], ...]:
    """Byte ranges (start, end) of ``message``'s header fields to remove: an
    Authentication-Results naming ``authserv_id``, and :data:`MARK`."""
    ours = authserv_id.lower().encode("ascii", "replace")
    ranges: list[tuple[int, int]] = []
    position, end = 0, min(len(message), HEAD_MAX)
    field: tuple[int, bytes] | None = None  # (start, name) of the field being read
    while position < end:
        newline = message.find(b"\n", position, end)
        stop = end if newline < 0 else newline + 1
        line = message[position:stop]
        if line[:1] in (b" ", b"\t"):  # a continuation of the current field
            position = stop
            continue
        if field is not None:
            _judge(message, field, position, ours, ranges)
            field = None
        if line.strip(b"\r\n") == b"":
            return tuple(ranges)
        match = _FIELD.match(line)
        if match:
            field = (position, match.group(1).lower())
        position = stop
    if field is not None and position < len(message):
        _judge(message, field, position, ours, ranges)
    return tuple(ranges)


def _judge(
    message: bytes, field: tuple[int, bytes], stop: int, ours: bytes, ranges: list[tuple[int, int]]
) -> None:
    start, name = field
    if name == MARK.lower():
        ranges.append((start, stop))
    elif name == b"authentication-results":
        value = message[start:stop].partition(b":")[2]
        value = re.sub(rb"\([^)]*\)", b" ", value)  # comments (CFWS) around the id
        authserv = value.strip().split(b";", 1)[0].split()
        if authserv and authserv[0].lower() == ours:
            ranges.append((start, stop))
