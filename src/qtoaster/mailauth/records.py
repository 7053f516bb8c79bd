"""What an operator must publish in DNS for a domain hosted here (docs/dns.md).

Pure: no I/O.  `build_records` turns the domain, the mail host's name and public
addresses, the DKIM keys' TXT records, the listeners and the ``[publish]`` settings into
`Record` values (name, type, ttl, data) grouped in `Section`s with a comment saying what
each is for; `render_zone` is the one place they become zone-file text.  The DNS check
(``qtoaster dns check``, mailauth.dnscheck) compares the live DNS with the same values.

Invariants: every name is absolute (ends with "."); a TXT value longer than 255 bytes
is split into 255-byte strings (RFC 1035 3.3: one character-string holds 255 at most),
written in parentheses; the MTA-STS id is derived from the policy text, so it changes
exactly when the policy does; no address is ever guessed: without ``[publish]
addresses`` the records that need them are left out and a note says so.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from qtoaster.config.mailsettings import MtaStsMode, PublishSettings

DEFAULT_TTL = 3600
TXT_CHUNK = 255  # bytes in one TXT character-string (RFC 1035 3.3)


@dataclass(frozen=True, slots=True)
class Record:
    """One resource record: *data* is the RDATA as a zone file writes it, except TXT,
    whose *data* is the unsplit text (the renderer quotes and splits it)."""

    name: str
    type: str
    data: str
    ttl: int = DEFAULT_TTL


@dataclass(frozen=True, slots=True)
class Section:
    """Records that serve one purpose, with the comment lines saying which."""

    title: str
    comments: tuple[str, ...]
    records: tuple[Record, ...]


@dataclass(frozen=True, slots=True)
class DkimRecord:
    """One DKIM key's record as mailauth.dkimkeys gives it: name, TXT value, key state."""

    name: str  # "SELECTOR._domainkey.DOMAIN" (with or without the final dot)
    txt: str  # "v=DKIM1; k=rsa; p=..."
    state: str  # "pending", "active" or "retiring"


@dataclass(frozen=True, slots=True)
class Service:
    """One RFC 6186/8314 service: its SRV label and the port qtoaster serves it on
    (None: not offered here, published with the target "." of RFC 2782)."""

    label: str  # "_submission._tcp"
    port: int | None
    priority: int  # lower is preferred: implicit TLS over STARTTLS (RFC 8314 5.1)


@dataclass(frozen=True, slots=True)
class Published:
    """Everything `build_records` computed for one domain."""

    domain: str
    host: str
    sections: tuple[Section, ...]
    mta_sts_policy: str  # the text mta-sts.DOMAIN must serve
    notes: tuple[str, ...] = field(default=())  # what could not be computed, and why

    def records(self) -> list[Record]:
        return [record for section in self.sections for record in section.records]


def absolute(name: str) -> str:
    """*name* lower-cased with exactly one final dot."""
    return name.rstrip(".").lower() + "."


def in_domain(host: str, domain: str) -> bool:
    host, domain = host.rstrip(".").lower(), domain.rstrip(".").lower()
    return host == domain or host.endswith("." + domain)


def ptr_name(address: str) -> str:
    """The in-addr.arpa / ip6.arpa name of *address* (ValueError if it is not one)."""
    return ipaddress.ip_address(address).reverse_pointer + "."


def split_txt(text: str) -> list[bytes]:
    """*text* as TXT character-strings of at most 255 bytes each (one when shorter)."""
    raw = text.encode("utf-8")
    return [raw[i : i + TXT_CHUNK] for i in range(0, len(raw), TXT_CHUNK)] or [b""]


def _quote(chunk: bytes) -> str:
    out = []
    for byte in chunk:
        char = chr(byte)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            out.append(f"\\{byte:03d}")  # zone-file \DDD (RFC 1035 5.1)
    return '"' + "".join(out) + '"'


def render_data(record: Record) -> str:
    """The RDATA of *record* as a zone file writes it (TXT quoted, long TXT split)."""
    if record.type != "TXT":
        return record.data
    chunks = [_quote(chunk) for chunk in split_txt(record.data)]
    if len(chunks) == 1:
        return chunks[0]
    return "( " + "\n\t\t".join(chunks) + " )"


def render_zone(published: Published) -> str:
    """Zone-file text: each section's comment lines, then its records, one per line."""
    lines = [f"; DNS records for {published.domain} (mail host {published.host})"]
    lines += [f"; NOTE: {note}" for note in published.notes]
    for section in published.sections:
        lines.append("")
        lines.append(f"; {section.title}")
        lines += [f"; {comment}" for comment in section.comments]
        for record in section.records:
            lines.append(f"{record.name}\t{record.ttl}\tIN\t{record.type}\t{render_data(record)}")
    return "\n".join(lines) + "\n"


def expand_address(template: str, domain: str) -> str:
    return template.replace("{domain}", domain.rstrip(".").lower())


def mta_sts_policy(host: str, mode: MtaStsMode, max_age: int) -> str:
    """The policy file (RFC 8461 3.2) naming *host* as the only MX."""
    return f"version: STSv1\nmode: {mode}\nmx: {host.rstrip('.').lower()}\nmax_age: {max_age}\n"


def mta_sts_id(policy: str) -> str:
    """An id (1-32 alphanumerics, RFC 8461 3.1) that changes when *policy* does."""
    return hashlib.sha256(policy.encode()).hexdigest()[:20]


def default_spf(domain: str, host: str, addresses: Sequence[str]) -> str:
    """``v=spf1 mx -all``; with the host's addresses instead when the host is outside
    the domain, so the domain's SPF does not depend on another zone's records."""
    if addresses and not in_domain(host, domain):
        terms = [f"ip{ipaddress.ip_address(a).version}:{a}" for a in addresses]
        return "v=spf1 " + " ".join(terms) + " -all"
    return "v=spf1 mx -all"


def services(listeners: Iterable[tuple[str, int]]) -> list[Service]:
    """The RFC 6186/8314 services from (listener kind, port) pairs of public listeners."""
    ports: dict[str, int] = {}
    for kind, port in listeners:
        ports.setdefault(kind, port)  # the first listener of a kind is the one advertised
    return [
        Service("_submissions._tcp", ports.get("smtps"), 0),
        Service("_submission._tcp", ports.get("submission"), 10),
        Service("_imaps._tcp", ports.get("imaps"), 0),
        Service("_imap._tcp", ports.get("imap"), 10),
        Service("_pop3s._tcp", ports.get("pop3s"), 0),
        Service("_pop3._tcp", ports.get("pop3"), 10),
    ]


def build_records(
    domain: str,
    host: str,
    addresses: Sequence[str],
    dkim: Sequence[DkimRecord],
    listeners: Iterable[tuple[str, int]],
    settings: PublishSettings,
) -> Published:
    """Every record *domain* needs when *host* receives and sends its mail.

    *addresses* are the host's public addresses (checked: ValueError names a bad one);
    *listeners* are (kind, port) of the listeners the world can reach.
    """
    for address in addresses:
        ipaddress.ip_address(address)
    zone, mx = absolute(domain), absolute(host)
    name = zone.rstrip(".")
    notes: list[str] = []
    sections = [
        Section(
            "MX: where mail for the domain is delivered",
            (),
            (Record(zone, "MX", f"10 {mx}"),),
        )
    ]
    if addresses:
        sections.append(
            Section(
                "the mail host's addresses (senders and clients connect to these)",
                ("MX and SRV targets must have A/AAAA records, never a CNAME (RFC 2181 10.3)",),
                tuple(_address_record(mx, a) for a in addresses),
            )
        )
        sections.append(
            Section(
                "PTR: reverse DNS, published by whoever holds the addresses (your provider)",
                (
                    f"each must name {mx}, whose A/AAAA name the address again (forward-",
                    "confirmed reverse DNS): receivers refuse or junk mail from hosts without it",
                ),
                tuple(Record(ptr_name(a), "PTR", mx) for a in addresses),
            )
        )
    else:
        notes.append(
            "[publish] addresses is not set: the host's A/AAAA and PTR records are not "
            "listed (set the host's public IPv4/IPv6 addresses to get them)"
        )
    spf = settings.spf or default_spf(domain, host, addresses)
    sections.append(
        Section(
            "SPF (RFC 7208): the hosts that may send mail from the domain",
            ("exactly one v=spf1 record per name; -all: others fail",),
            (Record(zone, "TXT", spf),),
        )
    )
    if dkim:
        sections.append(
            Section(
                "DKIM (RFC 6376): the public keys of the domain's signatures",
                (
                    "pending keys are published before they sign, retiring ones stay until",
                    "the mail they signed has been read; states: "
                    + ", ".join(f"{absolute(k.name)} {k.state}" for k in dkim),
                ),
                tuple(Record(absolute(k.name), "TXT", k.txt) for k in dkim),
            )
        )
    else:
        notes.append(f"no DKIM keys: run qtoaster dkim keygen {name}")
    sections.append(_dmarc(zone, name, settings))
    policy = mta_sts_policy(host, settings.mta_sts_mode, settings.mta_sts_max_age)
    sections.append(
        Section(
            "MTA-STS (RFC 8461): senders must use TLS with a valid certificate for the MX",
            (
                f"the policy file must be served at https://mta-sts.{name}/.well-known/mta-sts.txt",
                f"(mta-sts.{name} needs A/AAAA or a CNAME and a valid certificate for it);",
                "the id changes with the policy text: publish both together; the policy:",
                *(f"    {line}" for line in policy.splitlines()),
            ),
            (Record(f"_mta-sts.{zone}", "TXT", f"v=STSv1; id={mta_sts_id(policy)}"),),
        )
    )
    tlsrpt = expand_address(settings.tlsrpt_rua, name)
    if tlsrpt:
        sections.append(
            Section(
                "TLS-RPT (RFC 8460): where senders report TLS failures delivering to the MX",
                (),
                (Record(f"_smtp._tls.{zone}", "TXT", f"v=TLSRPTv1; rua=mailto:{tlsrpt}"),),
            )
        )
    sections.append(_srv(zone, mx, listeners))
    return Published(name, mx.rstrip("."), tuple(sections), policy, tuple(notes))


def _address_record(name: str, address: str) -> Record:
    kind = "A" if ipaddress.ip_address(address).version == 4 else "AAAA"
    return Record(name, kind, ipaddress.ip_address(address).compressed)


def _dmarc(zone: str, name: str, settings: PublishSettings) -> Section:
    value = f"v=DMARC1; p={settings.dmarc_policy}"
    comments = ["p= tells receivers what to do with mail that fails SPF and DKIM alignment"]
    rua = expand_address(settings.dmarc_rua, name)
    if rua:
        value += f"; rua=mailto:{rua}"
        report_domain = rua.rpartition("@")[2]
        if not in_domain(report_domain, name):
            comments.append(
                f"reports go to another domain: {report_domain} must publish "
                f'{name}._report._dmarc.{report_domain}. TXT "v=DMARC1" (RFC 7489 7.1)'
            )
    return Section(
        "DMARC (RFC 7489): the domain's policy for mail failing authentication",
        tuple(comments),
        (Record(f"_dmarc.{zone}", "TXT", value),),
    )


def _srv(zone: str, mx: str, listeners: Iterable[tuple[str, int]]) -> Section:
    records = []
    for service in services(listeners):
        if service.port is None:  # RFC 2782/6186: "." says the service is not available
            records.append(Record(f"{service.label}.{zone}", "SRV", "0 0 0 ."))
        else:
            data = f"{service.priority} 1 {service.port} {mx}"
            records.append(Record(f"{service.label}.{zone}", "SRV", data))
    return Section(
        "SRV (RFC 6186, RFC 8314): where mail clients submit and read mail",
        ('target ".": the service is not offered (clients need not try it)',),
        tuple(records),
    )
