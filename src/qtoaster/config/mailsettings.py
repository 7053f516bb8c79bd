"""The settings of mail authentication and what an operator publishes in DNS (issue 14):
``[dkim]``, ``[srs]``, ``[mailauth]`` and ``[publish]`` of qtoaster.toml, typed and checked
as ``config/settings.py`` does the rest (docs/configuration.md).

Invariants: as settings.py's: every key known, typed and within bounds, or a problem
recorded in the :class:`~qtoaster.config.tables.Tables`; absent keys take the defaults.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from qtoaster.config.tables import (
    Tables,
    choice,
    int_between,
    is_bool,
    is_table,
    seconds_between,
)


class SpfFail(StrEnum):
    """[mailauth] spf_fail: what an SPF fail of the MAIL FROM means."""

    REJECT = "reject"
    RECORD = "record"


class DmarcReject(StrEnum):
    """[mailauth] dmarc_reject: what a DMARC fail under p=reject means."""

    REJECT = "reject"
    QUARANTINE = "quarantine"
    RECORD = "record"


class DmarcQuarantine(StrEnum):
    """[mailauth] dmarc_quarantine: how a quarantined message is set apart."""

    JUNK = "junk"  # local delivery files it into the recipient's .Junk folder
    TAG = "tag"  # a header line marks it, delivery is as usual
    RECORD = "record"  # only the Authentication-Results line says it


class Fcrdns(StrEnum):
    """[mailauth] fcrdns: a client without forward-confirmed reverse DNS is ..."""

    RECORD = "record"  # ... only recorded (iprev= in Authentication-Results)
    REQUIRE = "require"  # ... refused with 450 4.7.25


class MtaStsMode(StrEnum):
    """[publish] mta_sts_mode (RFC 8461 5): what senders do when the policy is not met."""

    ENFORCE = "enforce"  # refuse to deliver without authenticated TLS to a listed MX
    TESTING = "testing"  # deliver anyway, report through TLS-RPT
    NONE = "none"  # the policy is withdrawn


class DmarcPolicy(StrEnum):
    """[publish] dmarc_policy (RFC 7489 6.3): what receivers do with failing mail."""

    NONE = "none"
    QUARANTINE = "quarantine"
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class PublishSettings:
    """[publish]: what ``qtoaster dns records`` tells the operator to publish (docs/dns.md).

    *dmarc_rua* and *tlsrpt_rua* are mail addresses in which ``{domain}`` stands for the
    domain; "" leaves DMARC's rua tag out, and the TLS-RPT record (whose rua is required).
    """

    host: str | None = None  # the mail host's name; None: control/me
    addresses: tuple[str, ...] = ()  # its public IPv4/IPv6 addresses (SPF, A/AAAA, PTR)
    spf: str | None = None  # replaces the computed SPF record
    # quarantine: spoofed mail lands in junk, while mail that forwarding broke still
    # arrives; "none" protects nothing, "reject" loses such mail outright.
    dmarc_policy: DmarcPolicy = DmarcPolicy.QUARANTINE
    dmarc_rua: str = "postmaster@{domain}"
    tlsrpt_rua: str = "postmaster@{domain}"
    # testing: a policy published while the certificate is still self-signed must not
    # make senders hold the domain's mail; "enforce" once the certificate is valid.
    mta_sts_mode: MtaStsMode = MtaStsMode.TESTING
    mta_sts_max_age: int = 604800  # a week (RFC 8461 3.2 suggests weeks)


@dataclass(frozen=True, slots=True)
class SrsSettings:
    """[srs]: the sender of a forwarded message is rewritten (docs/srs.md)."""

    enabled: bool = True
    domain: str | None = None  # None: the forwarding recipient's own domain
    max_age_days: int = 21  # how long a rewritten address takes bounces back


@dataclass(frozen=True, slots=True)
class DkimSettings:
    """[dkim] (docs/dkim.md): outbound signing and the key rotation of ``qtoaster dkim``."""

    sign: bool = True  # sign our users' mail whose From domain has active keys
    expiry: int = 0  # seconds a signature is valid (x=); 0: no x=
    grace: int = 7 * 86400  # seconds a retired key stays published before rotate deletes it
    rotate_after: int = 180 * 86400  # rotate makes a new key once the active one is this old
    algorithms: tuple[str, ...] = ("rsa", "ed25519")  # what keygen and rotate make


@dataclass(frozen=True, slots=True)
class MailAuthPolicy:
    """What [mailauth] (or one [mailauth.domains."D"]) does with a message's results."""

    enabled: bool = True  # judge mail on port 25 (MAILAUTH in tcp.smtp overrides)
    spf_fail: SpfFail = SpfFail.RECORD
    dmarc_reject: DmarcReject = DmarcReject.REJECT
    dmarc_quarantine: DmarcQuarantine = DmarcQuarantine.JUNK
    fcrdns: Fcrdns = Fcrdns.RECORD


@dataclass(frozen=True, slots=True)
class MailAuthSettings:
    """[mailauth]: inbound SPF, DKIM, DMARC, ARC and FCrDNS (docs/antispam.md)."""

    policy: MailAuthPolicy = MailAuthPolicy()
    domains: tuple[tuple[str, MailAuthPolicy], ...] = ()  # per recipient domain, lower case
    timeout: float = 10.0  # seconds one DNS lookup may take
    max_bytes: int = 10 << 20  # messages verified whole in memory up to this size
    workers: int = 2  # threads of the verifier (per smtpd worker)

    def for_domain(self, domain: str) -> MailAuthPolicy:
        for name, policy in self.domains:
            if name == domain.lower():
                return policy
        return self.policy


_POLICY_KEYS = {
    "enabled": (is_bool, None),
    "spf_fail": (choice(SpfFail), SpfFail),
    "dmarc_reject": (choice(DmarcReject), DmarcReject),
    "dmarc_quarantine": (choice(DmarcQuarantine), DmarcQuarantine),
    "fcrdns": (choice(Fcrdns), Fcrdns),
}


def mailauth_settings(tables: Tables) -> MailAuthSettings:
    base = MailAuthPolicy()
    values: dict[str, Any] = {}
    for key, (check, kind) in _POLICY_KEYS.items():
        value = tables.get("mailauth", key, check, getattr(base, key))
        values[key] = kind(value) if kind is not None else value
    policy = MailAuthPolicy(**values)
    raw = tables.get("mailauth", "domains", is_table, {})
    domains: list[tuple[str, MailAuthPolicy]] = []
    for domain, section in raw.items():
        where = f'[mailauth.domains."{domain}"]'
        if not isinstance(section, dict):
            tables.problems.append(f"{tables.source}: {where} must be a table")
            continue
        override = dict(values)
        for key, value in section.items():
            if key not in _POLICY_KEYS:
                tables.problems.append(f"{tables.source}: {where} unknown key {key!r}")
                continue
            check, kind = _POLICY_KEYS[key]
            problem = check(value)
            if problem:
                tables.problems.append(f"{tables.source}: {where} {key}: {problem}, not {value!r}")
                continue
            override[key] = kind(value) if kind is not None else value
        domains.append((domain.lower().rstrip("."), MailAuthPolicy(**override)))
    return MailAuthSettings(
        policy=policy,
        domains=tuple(domains),
        timeout=float(tables.get("mailauth", "timeout", seconds_between(0.1, 300), 10.0)),
        max_bytes=tables.get("mailauth", "max_bytes", int_between(64 << 10, 1 << 30), 10 << 20),
        workers=tables.get("mailauth", "workers", int_between(1, 64), 2),
    )


def srs_settings(tables: Tables) -> SrsSettings:
    return SrsSettings(
        enabled=tables.get("srs", "enabled", is_bool, True),
        domain=tables.get("srs", "domain", _is_domain, None),
        max_age_days=tables.get("srs", "max_age_days", int_between(1, 1000), 21),
    )


_DOMAIN = re.compile(
    r"(?i)^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
)


def _is_domain(value: Any) -> str | None:
    if not isinstance(value, str) or not _DOMAIN.match(value):
        return "expected a domain name"
    return None


def publish_settings(tables: Tables) -> PublishSettings:
    def get(key: str, check: Callable[[Any], str | None], default: Any) -> Any:
        return tables.get("publish", key, check, default)

    defaults = PublishSettings()
    host = get("host", _is_host_name, None)
    return PublishSettings(
        host=host.rstrip(".").lower() if host else None,
        addresses=tuple(
            ipaddress.ip_address(a).compressed for a in get("addresses", _is_addresses, [])
        ),
        spf=get("spf", _is_spf, None),
        dmarc_policy=DmarcPolicy(get("dmarc_policy", choice(DmarcPolicy), defaults.dmarc_policy)),
        dmarc_rua=get("dmarc_rua", _is_report_address, defaults.dmarc_rua),
        tlsrpt_rua=get("tlsrpt_rua", _is_report_address, defaults.tlsrpt_rua),
        mta_sts_mode=MtaStsMode(get("mta_sts_mode", choice(MtaStsMode), defaults.mta_sts_mode)),
        # RFC 8461 3.2: at most 31557600 seconds (a year)
        mta_sts_max_age=get("mta_sts_max_age", int_between(86400, 31557600), 604800),
    )


_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"


def _is_host_name(value: Any) -> str | None:
    ok = isinstance(value, str) and len(value) <= 253
    ok = ok and re.fullmatch(rf"{_LABEL}(\.{_LABEL})+\.?", value.lower()) is not None
    return None if ok else "must be a fully qualified host name"


def _is_addresses(value: Any) -> str | None:
    problem = "must be a list of the host's public IPv4/IPv6 addresses"
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return problem
    for text in value:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            return f"{problem} ({text!r} is not an IP address)"
        # Not is_global: private ranges are public behind some NATs, and tests use the
        # documentation ranges; these never are.
        if address.is_loopback or address.is_link_local or address.is_multicast:
            return f"{problem} ({text} is not reachable from elsewhere)"
        if address.is_unspecified:
            return f"{problem} ({text} is not one address)"
    return None


def _is_spf(value: Any) -> str | None:
    ok = isinstance(value, str) and value.isascii() and value.lower().startswith("v=spf1")
    ok = ok and '"' not in value and "\n" not in value and len(value) <= 450
    return None if ok else 'must be an SPF record, "v=spf1 ..." (at most 450 characters)'


def _is_report_address(value: Any) -> str | None:
    # DMARC separates URIs with "," and tags with ";", and "!" starts a size limit.
    ok = isinstance(value, str) and value.isascii() and not re.search(r"[\s,;!\"]", value)
    address = value.replace("{domain}", "example.com") if isinstance(value, str) else ""
    ok = ok and (value == "" or re.fullmatch(r"[^@{}]+@[^@{}]+\.[^@{}]+", address) is not None)
    return None if ok else 'must be a mail address ("{domain}" for the domain) or ""'


def dkim_settings(tables: Tables) -> DkimSettings:
    day = 86400
    return DkimSettings(
        sign=tables.get("dkim", "sign", is_bool, True),
        expiry=tables.get("dkim", "expiry", int_between(0, 3650 * day), 0),
        grace=tables.get("dkim", "grace", int_between(0, 3650 * day), 7 * day),
        rotate_after=tables.get("dkim", "rotate_after", int_between(day, 3650 * day), 180 * day),
        algorithms=tuple(tables.get("dkim", "algorithms", _is_dkim_algorithms, ["rsa", "ed25519"])),
    )


def _is_dkim_algorithms(value: Any) -> str | None:
    ok = isinstance(value, list) and value and all(v in ("rsa", "ed25519") for v in value)
    return None if ok and len(set(value)) == len(value) else 'must be a list of "rsa", "ed25519"'
