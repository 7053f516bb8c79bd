"""Compare the live DNS with what `records.build_records` says to publish (``qtoaster dns
check``, docs/dns.md).

The DNS is reached only through a `Lookup` the caller gives (the CLI builds it on the
configured resolver), so this module does no I/O of its own and runs in a plain thread,
never on an event loop.  Each check gives one `Finding`: ``ok``, ``missing`` (nothing
published) or ``wrong`` (something else published: what was found and what was expected).

Invariants: a DNS failure (timeout, SERVFAIL, REFUSED) is never a finding: the lookup
raises `DnsTemporary` and the whole check stops, so a flaky resolver never reads as a
missing record.  SPF is compared by what it does, not by its text: a different record
that passes for each of the host's addresses is ok (with a note); more than one SPF
record is wrong (RFC 7208 4.5: a permerror).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import spf

from qtoaster.mailauth.dnsquery import DnsTemporary
from qtoaster.mailauth.records import DkimRecord, Published, Record, absolute, ptr_name

Status = Literal["ok", "missing", "wrong"]


class Lookup(Protocol):
    """The answers for (name, type) as text: TXT strings joined, MX ``PREF TARGET``, SRV
    ``PRIO WEIGHT PORT TARGET``, names absolute and lower-case; [] for NXDOMAIN or no
    data; `DnsTemporary` when the DNS cannot be asked."""

    def __call__(self, name: str, rdtype: str) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class Finding:
    status: Status
    what: str  # "MX example.com."
    detail: str = ""

    def line(self) -> str:
        return f"{self.status:<7} {self.what}" + (f": {self.detail}" if self.detail else "")


def tags(text: str) -> dict[str, str]:
    """``k=v; k=v`` tag lists (DKIM, DMARC, MTA-STS, TLS-RPT); ValueError if malformed."""
    result: dict[str, str] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", key.strip()):
            raise ValueError(f"{part.strip()!r} is not tag=value")
        result[key.strip().lower()] = value.strip()
    return result


def _by_prefix(values: list[str], prefix: str) -> list[str]:
    """The TXT values that are records of one kind (``v=spf1`` and the like)."""
    pattern = re.compile(re.escape(prefix) + r"(;|\s|$)", re.IGNORECASE)
    return [value for value in values if pattern.match(value.strip())]


def check(
    published: Published,
    dkim: Sequence[DkimRecord],
    addresses: Sequence[str],
    lookup: Lookup,
    fetch_policy: Callable[[], str] | None = None,
) -> list[Finding]:
    """Every finding for *published*.  *addresses* are the host's configured public
    addresses; when empty, the host's A/AAAA in the DNS stand in for them (PTR, SPF)."""
    findings: list[Finding] = []
    zone, host = absolute(published.domain), absolute(published.host)
    findings.append(_mx(zone, host, lookup))
    found_addresses = lookup(host, "A") + lookup(host, "AAAA")
    findings += _host_addresses(host, addresses, found_addresses)
    for address in addresses or found_addresses:
        findings.append(_ptr(address, host, lookup))
    records = published.records()
    spf_record = next(r for r in records if r.type == "TXT" and r.data.startswith("v=spf1"))
    findings.append(_spf(published, spf_record.data, addresses or found_addresses, lookup))
    for key in dkim:
        if key.state in ("active", "pending"):  # retiring keys may already be gone
            findings.append(_dkim(key, lookup))
    findings.append(_dmarc(zone, lookup))
    sts = next(r for r in records if r.name.startswith("_mta-sts."))
    findings.append(_mta_sts(sts, lookup))
    if fetch_policy is not None:
        findings.append(_policy(published, fetch_policy))
    findings += [_tlsrpt(r, lookup) for r in records if r.name.startswith("_smtp._tls.")]
    findings += [_srv(r, lookup) for r in records if r.type == "SRV"]
    return findings


def _mx(zone: str, host: str, lookup: Lookup) -> Finding:
    what = f"MX {zone}"
    found = [answer.split()[1] for answer in lookup(zone, "MX")]
    if not found:
        return Finding("missing", what, f"expected {host}")
    if host in found:
        return Finding("ok", what, " ".join(found))
    return Finding("wrong", what, f"found {' '.join(found)}; expected {host}")


def _host_addresses(host: str, wanted: Sequence[str], found: list[str]) -> list[Finding]:
    what = f"A/AAAA {host}"
    found_set = {ipaddress.ip_address(a) for a in found}
    if not wanted:
        if not found:
            return [Finding("missing", what, "the host has no address in the DNS")]
        shown = " ".join(sorted(found))
        return [Finding("ok", what, f"{shown} (not compared: [publish] addresses is not set)")]
    wanted_set = {ipaddress.ip_address(a) for a in wanted}
    expected = " ".join(a.compressed for a in sorted(wanted_set, key=_order))
    if not found_set:
        return [Finding("missing", what, f"expected {expected}")]
    if found_set == wanted_set:
        return [Finding("ok", what, expected)]
    shown = " ".join(a.compressed for a in sorted(found_set, key=_order))
    return [Finding("wrong", what, f"found {shown}; expected {expected}")]


def _order(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> tuple[int, int]:
    return address.version, int(address)


def _ptr(address: str, host: str, lookup: Lookup) -> Finding:
    what = f"PTR {address}"
    found = lookup(ptr_name(address), "PTR")
    if not found:
        return Finding("missing", what, f"expected {host}")
    if host in found:
        return Finding("ok", what, host)
    return Finding("wrong", what, f"found {' '.join(found)}; expected {host}")


def _spf(published: Published, expected: str, addresses: Sequence[str], lookup: Lookup) -> Finding:
    zone = absolute(published.domain)
    what = f"SPF {zone}"
    found = _by_prefix(lookup(zone, "TXT"), "v=spf1")
    if not found:
        return Finding("missing", what, f'expected "{expected}"')
    if len(found) > 1:
        shown = "; ".join(f'"{value}"' for value in found)
        return Finding("wrong", what, f"{len(found)} SPF records (a permerror): {shown}")
    record = found[0]
    if " ".join(record.lower().split()) == expected.lower():
        return Finding("ok", what, f'"{record}"')
    if not addresses:
        return Finding("wrong", what, f'found "{record}"; expected "{expected}"')
    results = [(a, spf_result(a, published.domain, published.host, lookup)) for a in addresses]
    failing = [f"{result} for {address}" for address, result in results if result != "pass"]
    if failing:
        detail = f'found "{record}": {", ".join(failing)}; expected "{expected}"'
        return Finding("wrong", what, detail)
    return Finding("ok", what, f'"{record}" (not the suggested "{expected}", but it passes)')


def spf_result(address: str, domain: str, host: str, lookup: Lookup) -> str:
    """pyspf's result for mail from *host* at *address* with a sender in *domain*."""
    with _spf_dns(lookup):
        query = spf.query(i=address, s=f"postmaster@{domain}", h=host, timeout=30)
        result, _code, _explanation = query.check()
    if result == "temperror":
        raise DnsTemporary(f"SPF of {domain}: temporary DNS error")
    return str(result)


@contextmanager
def _spf_dns(lookup: Lookup) -> Iterator[None]:
    """pyspf asks the DNS through its module function DNSLookup (the system resolver);
    for the duration, it asks *lookup* instead.  The CLI that calls this runs no other
    thread, so swapping the module global affects nothing else."""

    def answer(name: str, qtype: str, *_args: Any) -> list[tuple[tuple[str, str], Any]]:
        try:
            values = lookup(absolute(name), qtype)
        except DnsTemporary as exc:
            raise spf.TempError(f"DNS {exc}") from None
        if qtype == "MX":
            return [((name, qtype), (int(v.split()[0]), v.split()[1])) for v in values]
        if qtype in ("TXT", "SPF"):
            return [((name, qtype), (v.encode(),)) for v in values]
        return [((name, qtype), v) for v in values]

    saved = spf.DNSLookup
    spf.DNSLookup = answer
    try:
        yield
    finally:
        spf.DNSLookup = saved


def _dkim(key: DkimRecord, lookup: Lookup) -> Finding:
    name = absolute(key.name)
    what = f"DKIM {name} ({key.state})"
    found = lookup(name, "TXT")
    if not found:
        return Finding("missing", what, "expected the key's TXT record")
    expected = _dkim_key(key.txt)
    for value in found:
        try:
            if _dkim_key(value) == expected:
                return Finding("ok", what)
        except ValueError:
            continue
    shown = "; ".join(f'"{value[:60]}..."' if len(value) > 60 else f'"{value}"' for value in found)
    return Finding("wrong", what, f"found {shown}; expected another public key (p=)")


def _dkim_key(text: str) -> tuple[str, str]:
    """(k, p) of a DKIM key record, whitespace in p removed (RFC 6376 3.6.1)."""
    parsed = tags(text)
    return parsed.get("k", "rsa").lower(), "".join(parsed.get("p", "").split())


def _dmarc(zone: str, lookup: Lookup) -> Finding:
    name = f"_dmarc.{zone}"
    what = f"DMARC {name}"
    found = _by_prefix(lookup(name, "TXT"), "v=DMARC1")
    if not found:
        return Finding("missing", what, "expected v=DMARC1; p=...")
    if len(found) > 1:
        return Finding("wrong", what, f"{len(found)} DMARC records: receivers ignore them all")
    try:
        policy = tags(found[0]).get("p", "")
    except ValueError as exc:
        return Finding("wrong", what, f'"{found[0]}": {exc}')
    if policy.lower() not in ("none", "quarantine", "reject"):
        return Finding("wrong", what, f'"{found[0]}": p= must be none, quarantine or reject')
    return Finding("ok", what, f'"{found[0]}"')


def _mta_sts(record: Record, lookup: Lookup) -> Finding:
    what = f"MTA-STS {record.name}"
    found = _by_prefix(lookup(record.name, "TXT"), "v=STSv1")
    if not found:
        return Finding("missing", what, f'expected "{record.data}"')
    if len(found) > 1:
        return Finding("wrong", what, f"{len(found)} STSv1 records (RFC 8461 3.1: none counts)")
    try:
        found_id = tags(found[0]).get("id", "")
    except ValueError as exc:
        return Finding("wrong", what, f'"{found[0]}": {exc}')
    expected_id = tags(record.data)["id"]
    if found_id != expected_id:
        detail = f'found "{found[0]}"; expected "{record.data}" (the policy changed?)'
        return Finding("wrong", what, detail)
    return Finding("ok", what, f'"{found[0]}"')


def _policy(published: Published, fetch_policy: Callable[[], str]) -> Finding:
    what = f"MTA-STS policy https://mta-sts.{published.domain}/.well-known/mta-sts.txt"
    try:
        text = fetch_policy()
    except OSError as exc:
        return Finding("missing", what, f"not fetched: {exc}")
    found, expected = _policy_fields(text), _policy_fields(published.mta_sts_policy)
    if found == expected:
        return Finding("ok", what)
    differ = sorted(k for k in expected.keys() | found.keys() if found.get(k) != expected.get(k))
    shown = ", ".join(f"{k}: {' '.join(found.get(k, ['(none)']))}" for k in differ)
    wanted = ", ".join(f"{k}: {' '.join(expected.get(k, ['(none)']))}" for k in differ)
    return Finding("wrong", what, f"found {shown}; expected {wanted}")


def _policy_fields(text: str) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), []).append(value.strip().lower())
    return {key: sorted(values) for key, values in fields.items()}


def _tlsrpt(record: Record, lookup: Lookup) -> Finding:
    what = f"TLS-RPT {record.name}"
    found = _by_prefix(lookup(record.name, "TXT"), "v=TLSRPTv1")
    if not found:
        return Finding("missing", what, f'expected "{record.data}"')
    if len(found) > 1:
        return Finding("wrong", what, f"{len(found)} TLSRPTv1 records (RFC 8460 3: none counts)")
    try:
        rua = tags(found[0]).get("rua", "")
    except ValueError as exc:
        return Finding("wrong", what, f'"{found[0]}": {exc}')
    if not rua:
        return Finding("wrong", what, f'"{found[0]}" has no rua; expected "{record.data}"')
    return Finding("ok", what, f'"{found[0]}"')


def _srv(record: Record, lookup: Lookup) -> Finding:
    what = f"SRV {record.name}"
    found = lookup(record.name, "SRV")
    # priority and weight are the operator's to choose: compare port and target
    expected = _srv_target(record.data)
    if not found and expected == ("0", "."):
        # RFC 6186 3.4: "." only spares clients a probe; its absence harms nothing
        return Finding("ok", what, 'not published (optional: "." says not offered)')
    if not found:
        return Finding("missing", what, f"expected {record.data}")
    if expected in {_srv_target(value) for value in found}:
        return Finding("ok", what, record.data)
    return Finding("wrong", what, f"found {', '.join(found)}; expected {record.data}")


def _srv_target(data: str) -> tuple[str, str]:
    _priority, _weight, port, target = data.split()
    return ("0", ".") if target == "." else (port, target.lower())
