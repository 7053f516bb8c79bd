"""One message's authentication: SPF (MAIL FROM and HELO), DKIM (every signature), ARC,
DMARC and FCrDNS (iprev), evaluated once, off the event loop.

:class:`Verifier` owns one bounded thread pool (``workers`` threads) and one cached
resolver; :meth:`Verifier.evaluate` reads the spooled message and does every blocking
step (pyspf, dkimpy, DNS) in that pool, so an event loop only awaits it.

Memory bound: a message up to ``max_bytes`` is read whole into memory (dkimpy's
verifier needs it so).  A larger one is not DKIM- or ARC-verified: its signatures are
recorded as ``neutral`` ("message too large to verify"), and since a signature we did
not check might have aligned, its DMARC verdict is recorded but never acted on
(:attr:`Evaluation.dmarc_actionable`).  SPF and iprev need no message and always run.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

from qtoaster.mailauth.arc import ArcResult, verify_arc
from qtoaster.mailauth.dkimverify import DkimResult, verify_dkim
from qtoaster.mailauth.dmarc import DmarcResult, evaluate
from qtoaster.mailauth.dnsquery import DnsTemporary, Lookup
from qtoaster.mailauth.results import HEAD_MAX, authentication_results, forged_lines
from qtoaster.mailauth.spf import SpfResult, check_helo, check_mailfrom

MAX_BYTES = 10 << 20  # default bound of a message verified in memory
PTR_NAMES_MAX = 10  # RFC 8601 / 7208 5.5: at most 10 PTR names are tried


@dataclass(frozen=True, slots=True)
class Evaluation:
    spf: SpfResult
    helo: SpfResult
    dkim: tuple[DkimResult, ...]
    arc: ArcResult
    dmarc: DmarcResult
    iprev: str  # pass, fail, temperror
    header: bytes  # the Authentication-Results line
    drop: tuple[tuple[int, int], ...]  # forged lines (offsets in the message) to remove
    dmarc_actionable: bool = True  # False: too large to verify DKIM, record only


def iprev(ip: str, lookup: Lookup) -> str:
    """FCrDNS (RFC 8601 section 3): a PTR name whose A/AAAA include the client."""
    try:
        client = ipaddress.ip_address(ip)
        names = lookup.ptr(ip)[:PTR_NAMES_MAX]
        for name in names:
            if any(_same(client, a) for a in lookup.addresses(name)):
                return "pass"
    except DnsTemporary:
        return "temperror"
    except ValueError:
        return "fail"
    return "fail"


def _same(client: ipaddress.IPv4Address | ipaddress.IPv6Address, text: str) -> bool:
    try:
        return ipaddress.ip_address(text) == client
    except ValueError:
        return False


def from_domain(message: bytes) -> tuple[str, str]:
    """(domain, problem) of the RFC5322.From: ("", why) when there is no single one."""
    head = message[: message.find(b"\n\n") + 1 or min(len(message), HEAD_MAX)]
    values: list[str] = []
    lines = head.decode("utf-8", "replace").splitlines()
    for index, line in enumerate(lines):
        if line[:5].lower() == "from:":
            value = line[5:]
            for more in lines[index + 1 :]:
                if more[:1] not in (" ", "\t"):
                    break
                value += more
            values.append(value)
    domains = {
        address.rpartition("@")[2].strip().lower().rstrip(">")
        for _name, address in email.utils.getaddresses(values)
        if "@" in address
    }
    if len(values) != 1 or len(domains) != 1:
        return "", "no single From domain"
    return domains.pop(), ""


class Verifier:
    def __init__(
        self,
        lookup: Lookup,
        authserv_id: str,
        *,
        workers: int = 2,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self._lookup = lookup
        self._authserv_id = authserv_id
        self._max_bytes = max_bytes
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mailauth")

    async def evaluate(
        self, ip: str, helo: str, sender: str, path: str, body_offset: int
    ) -> Evaluation:
        loop = asyncio.get_running_loop()
        job = partial(self.evaluate_file, ip, helo, sender, path, body_offset)
        return await loop.run_in_executor(self._pool, job)

    async def spf_mailfrom(self, ip: str, sender: str, helo: str) -> SpfResult:
        """SPF of the MAIL FROM alone (greylisting at RCPT skips mail that passes it)."""
        loop = asyncio.get_running_loop()
        job = partial(check_mailfrom, ip, sender, helo, self._lookup.spf)
        return await loop.run_in_executor(self._pool, job)

    async def forged(self, path: str, body_offset: int) -> tuple[tuple[int, int], ...]:
        """Only the lines to remove (mail that is not judged: relay clients, submission)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._forged_file, path, body_offset)

    def _forged_file(self, path: str, body_offset: int) -> tuple[tuple[int, int], ...]:
        with open(path, "rb") as spool:
            spool.seek(body_offset)
            return forged_lines(spool.read(HEAD_MAX), self._authserv_id)

    def evaluate_file(
        self, ip: str, helo: str, sender: str, path: str, body_offset: int
    ) -> Evaluation:
        with open(path, "rb") as spool:
            spool.seek(body_offset)
            size = os.fstat(spool.fileno()).st_size - body_offset
            whole = size <= self._max_bytes
            message = spool.read() if whole else spool.read(HEAD_MAX)
        return self.evaluate_message(ip, helo, sender, message, whole=whole)

    def evaluate_message(
        self, ip: str, helo: str, sender: str, message: bytes, *, whole: bool = True
    ) -> Evaluation:
        """Every result for ``message`` (the spooled bytes, LF line endings); blocking."""
        lookup = self._lookup
        spf = check_mailfrom(ip, sender, helo, lookup.spf)
        helo_result = check_helo(ip, helo, lookup.spf)
        if whole:
            dkim = tuple(verify_dkim(message, lookup.dkim_txt))
            arc = verify_arc(message, lookup.dkim_txt)
        else:
            dkim = tuple(
                DkimResult("neutral", r.domain, r.selector, r.b, "message too large to verify")
                for r in verify_dkim(message[: message.find(b"\n\n") + 2], _no_keys)
            )
            arc = ArcResult("none", "message too large to verify")
        domain, problem = from_domain(message)
        if domain:
            dmarc = evaluate(domain, spf, dkim, lookup.txt)
        else:
            dmarc = DmarcResult("none", "", reason=problem)
        rdns = iprev(ip, lookup)
        header = authentication_results(
            self._authserv_id,
            spf=spf,
            helo=helo_result,
            dkim=dkim,
            dmarc=dmarc,
            arc=arc,
            iprev=(rdns, ip),
        )
        drop = forged_lines(message, self._authserv_id)
        return Evaluation(spf, helo_result, dkim, arc, dmarc, rdns, header, drop, whole)

    def close(self) -> None:
        """No new work; what was asked still finishes (sessions of an older context)."""
        self._pool.shutdown(wait=False)


def _no_keys(name: bytes, timeout: float = 5) -> bytes | None:
    return None
