"""mailauth.records: the records a hosted domain needs, and their zone-file text.

The golden text is also read back by ldns-read-zone (ldnsutils), a real zone parser.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from qtoaster.config.mailsettings import DmarcPolicy, MtaStsMode, PublishSettings
from qtoaster.mailauth.records import (
    DkimRecord,
    build_records,
    mta_sts_id,
    ptr_name,
    render_zone,
    split_txt,
)

LISTENERS = [("smtp", 25), ("submission", 587), ("smtps", 465), ("pop3s", 995)]
DKIM_TXT = "v=DKIM1; k=rsa; p=" + "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA" * 8

GOLDEN = """\
; DNS records for example.com (mail host mail.example.com)

; MX: where mail for the domain is delivered
example.com.\t3600\tIN\tMX\t10 mail.example.com.

; the mail host's addresses (senders and clients connect to these)
; MX and SRV targets must have A/AAAA records, never a CNAME (RFC 2181 10.3)
mail.example.com.\t3600\tIN\tA\t192.0.2.10
mail.example.com.\t3600\tIN\tAAAA\t2001:db8::25

; PTR: reverse DNS, published by whoever holds the addresses (your provider)
; each must name mail.example.com., whose A/AAAA name the address again (forward-
; confirmed reverse DNS): receivers refuse or junk mail from hosts without it
10.2.0.192.in-addr.arpa.\t3600\tIN\tPTR\tmail.example.com.
5.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.\t3600\tIN\tPTR\t\
mail.example.com.

; SPF (RFC 7208): the hosts that may send mail from the domain
; exactly one v=spf1 record per name; -all: others fail
example.com.\t3600\tIN\tTXT\t"v=spf1 mx -all"

; DMARC (RFC 7489): the domain's policy for mail failing authentication
; p= tells receivers what to do with mail that fails SPF and DKIM alignment
_dmarc.example.com.\t3600\tIN\tTXT\t"v=DMARC1; p=quarantine; rua=mailto:postmaster@example.com"

; MTA-STS (RFC 8461): senders must use TLS with a valid certificate for the MX
; the policy file must be served at https://mta-sts.example.com/.well-known/mta-sts.txt
; (mta-sts.example.com needs A/AAAA or a CNAME and a valid certificate for it);
; the id changes with the policy text: publish both together; the policy:
;     version: STSv1
;     mode: testing
;     mx: mail.example.com
;     max_age: 604800
_mta-sts.example.com.\t3600\tIN\tTXT\t"v=STSv1; id={sts_id}"

; TLS-RPT (RFC 8460): where senders report TLS failures delivering to the MX
_smtp._tls.example.com.\t3600\tIN\tTXT\t"v=TLSRPTv1; rua=mailto:postmaster@example.com"

; SRV (RFC 6186, RFC 8314): where mail clients submit and read mail
; target ".": the service is not offered (clients need not try it)
_submissions._tcp.example.com.\t3600\tIN\tSRV\t0 1 465 mail.example.com.
_submission._tcp.example.com.\t3600\tIN\tSRV\t10 1 587 mail.example.com.
_imaps._tcp.example.com.\t3600\tIN\tSRV\t0 0 0 .
_imap._tcp.example.com.\t3600\tIN\tSRV\t0 0 0 .
_pop3s._tcp.example.com.\t3600\tIN\tSRV\t0 1 995 mail.example.com.
_pop3._tcp.example.com.\t3600\tIN\tSRV\t0 0 0 .
"""


def typical(**publish: object) -> str:
    published = build_records(
        "Example.COM",
        "mail.example.com",
        ["192.0.2.10", "2001:db8::25"],
        [],
        LISTENERS,
        PublishSettings(**publish),  # type: ignore[arg-type]
    )
    return render_zone(published)


def test_golden_zone_for_a_typical_domain() -> None:
    policy = "version: STSv1\nmode: testing\nmx: mail.example.com\nmax_age: 604800\n"
    expected = GOLDEN.replace("\\\n", "").format(sts_id=mta_sts_id(policy))
    text = typical()
    # the note of a domain without DKIM keys comes first
    assert text.startswith(expected.splitlines()[0] + "\n; NOTE: no DKIM keys: run qtoaster")
    lines = [line for line in text.splitlines() if not line.startswith("; NOTE:")]
    assert "\n".join(lines) + "\n" == expected


def test_zone_parses_with_ldns(tmp_path: Path) -> None:
    tool = shutil.which("ldns-read-zone")
    if tool is None:
        pytest.fail("ldns-read-zone missing: install the Debian package ldnsutils")
    dkim = [DkimRecord("sel1._domainkey.example.com", DKIM_TXT, "active")]
    published = build_records(
        "example.com", "mail.example.com", ["192.0.2.10"], dkim, LISTENERS, PublishSettings()
    )
    zone = tmp_path / "example.com.zone"
    soa = "example.com. 3600 IN SOA ns.example.com. root.example.com. 1 3600 600 86400 3600\n"
    zone.write_text(soa + render_zone(published))
    out = subprocess.run([tool, str(zone)], capture_output=True, text=True, check=True).stdout
    dkim_line = next(line for line in out.splitlines() if "_domainkey" in line)
    strings = dkim_line.split("\t")[-1]
    assert strings.replace('" "', "").strip('"') == DKIM_TXT  # the split reassembles
    assert "_submission._tcp.example.com.\t3600\tIN\tSRV\t10 1 587 mail.example.com." in out


def test_long_txt_split_into_255_byte_strings() -> None:
    chunks = split_txt(DKIM_TXT)
    assert [len(c) for c in chunks[:-1]] == [255] * (len(chunks) - 1)
    assert b"".join(chunks).decode() == DKIM_TXT
    dkim = [DkimRecord("sel1._domainkey.example.com.", DKIM_TXT, "pending")]
    text = render_zone(
        build_records("example.com", "mail.example.com", [], dkim, [], PublishSettings())
    )
    assert f'TXT\t( "{DKIM_TXT[:255]}"\n\t\t"{DKIM_TXT[255:510]}"' in text
    assert "sel1._domainkey.example.com. pending" in text
    assert "no DKIM keys" not in text


def test_ipv6_ptr_names() -> None:
    assert ptr_name("2001:db8::1") == (
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."
    )
    assert ptr_name("198.51.100.7") == "7.100.51.198.in-addr.arpa."
    with pytest.raises(ValueError):
        ptr_name("mail.example.com")


def test_srv_follows_the_listeners() -> None:
    only_smtp = build_records(
        "example.com", "mail.example.com", [], [], [("smtp", 25)], PublishSettings()
    )
    srv = {r.name: r.data for r in only_smtp.records() if r.type == "SRV"}
    assert set(srv.values()) == {"0 0 0 ."}  # nothing offered to clients
    assert "_submission._tcp.example.com." in srv and "_pop3._tcp.example.com." in srv
    pop3 = build_records(
        "example.com",
        "mail.example.com",
        [],
        [],
        [("pop3", 110), ("pop3", 1110), ("submission", 2587), ("imaps", 993)],
        PublishSettings(),
    )
    srv = {r.name: r.data for r in pop3.records() if r.type == "SRV"}
    assert srv["_pop3._tcp.example.com."] == "10 1 110 mail.example.com."
    assert srv["_submission._tcp.example.com."] == "10 1 2587 mail.example.com."
    assert srv["_pop3s._tcp.example.com."] == "0 0 0 ."
    assert srv["_imaps._tcp.example.com."] == "0 1 993 mail.example.com."
    assert srv["_imap._tcp.example.com."] == "0 0 0 ."


def test_without_addresses_nothing_is_guessed() -> None:
    published = build_records("example.com", "mx.example.net", [], [], [], PublishSettings())
    types = {r.type for r in published.records()}
    assert "A" not in types and "PTR" not in types
    assert any("[publish] addresses is not set" in note for note in published.notes)
    spf = next(r.data for r in published.records() if r.data.startswith("v=spf1"))
    assert spf == "v=spf1 mx -all"


def test_spf_with_addresses_when_the_host_is_elsewhere_and_settings() -> None:
    published = build_records(
        "example.org",
        "mx.example.net",
        ["192.0.2.10", "2001:db8::25"],
        [],
        [],
        PublishSettings(
            dmarc_policy=DmarcPolicy.REJECT,
            dmarc_rua="dmarc@reports.example.net",
            tlsrpt_rua="",
            mta_sts_mode=MtaStsMode.ENFORCE,
            mta_sts_max_age=86400,
        ),
    )
    data = {(r.name, r.type): r.data for r in published.records()}
    assert data[("example.org.", "TXT")] == "v=spf1 ip4:192.0.2.10 ip6:2001:db8::25 -all"
    assert data[("_dmarc.example.org.", "TXT")] == (
        "v=DMARC1; p=reject; rua=mailto:dmarc@reports.example.net"
    )
    assert not any(name.startswith("_smtp._tls") for name, _ in data)  # rua "" = no record
    assert published.mta_sts_policy == (
        "version: STSv1\nmode: enforce\nmx: mx.example.net\nmax_age: 86400\n"
    )
    assert 'example.org._report._dmarc.reports.example.net. TXT "v=DMARC1"' in render_zone(
        published
    )
    override = build_records(
        "example.org", "mx.example.net", [], [], [], PublishSettings(spf="v=spf1 a:x.test ~all")
    )
    assert ("example.org.", "TXT", "v=spf1 a:x.test ~all") in {
        (r.name, r.type, r.data) for r in override.records()
    }


def test_mta_sts_id_changes_with_the_policy() -> None:
    def sts_id(**publish: object) -> str:
        published = build_records(
            "example.com",
            "mail.example.com",
            [],
            [],
            [],
            PublishSettings(**publish),  # type: ignore[arg-type]
        )
        return next(r.data for r in published.records() if r.name.startswith("_mta-sts"))

    assert sts_id() == sts_id()
    assert sts_id() != sts_id(mta_sts_mode=MtaStsMode.ENFORCE)
    assert sts_id() != sts_id(mta_sts_max_age=86400)
    assert sts_id().removeprefix("v=STSv1; id=").isalnum()


def test_bad_address_is_refused() -> None:
    with pytest.raises(ValueError):
        build_records("example.com", "mail.example.com", ["nope"], [], [], PublishSettings())
