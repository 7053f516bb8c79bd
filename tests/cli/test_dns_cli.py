"""``qtoaster dns records`` and ``qtoaster dns check`` on a real home (``qtoaster init``),
``check`` against a real DNS server on loopback (tests/dnsserver.py, dnsmasq)."""

from __future__ import annotations

import http.server
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from tests.dnsserver import DnsServer, Zone

from qtoaster.cli.dns import EXIT_NOT_HOSTED, EXIT_TEMPORARY, fetch_policy
from qtoaster.cli.main import cli
from qtoaster.cli.newhome import init_home
from qtoaster.config.mailsettings import PublishSettings
from qtoaster.core.home import Home
from qtoaster.directory.store import Directory
from qtoaster.mailauth.records import DkimRecord, build_records, mta_sts_id, mta_sts_policy
from qtoaster.tls import certs

DOMAIN = "example.test"
HOST = "mail.example.test"
V4, V6 = "192.0.2.25", "2001:db8::25"
SPF = "v=spf1 mx -all"
DMARC = "v=DMARC1; p=quarantine; rua=mailto:postmaster@example.test"
TLSRPT = "v=TLSRPTv1; rua=mailto:postmaster@example.test"
STS = "v=STSv1; id=" + mta_sts_id(mta_sts_policy(HOST, PublishSettings().mta_sts_mode, 604800))


@pytest.fixture
def home(tmp_path: Path) -> Home:
    home = Home(tmp_path / "home")
    init_home(
        home,
        HOST,
        smtp=[":25"],
        submission=[":587"],
        smtps=["127.0.0.1:465"],  # loopback: not offered to the world
        pop3s=["[::]:995"],
        as_root=False,
    )
    directory = Directory.open(home)
    try:
        directory.add_domain(DOMAIN)
    finally:
        directory.close()
    set_toml(home, "addresses = []", f'addresses = ["{V4}", "{V6}"]')
    return home


def set_toml(home: Home, old: str, new: str) -> None:
    text = home.settings_file.read_text()
    assert old in text
    home.settings_file.write_text(text.replace(old, new))


def run(home: Home, *args: str) -> Result:
    return CliRunner().invoke(cli, ["dns", args[0], "--home", str(home.root), *args[1:]])


def full_zone(**changes: object) -> Zone:
    txt = {
        DOMAIN: SPF,
        f"_dmarc.{DOMAIN}": DMARC,
        f"_mta-sts.{DOMAIN}": STS,
        f"_smtp._tls.{DOMAIN}": TLSRPT,
    }
    txt.update(changes.pop("txt", {}))  # type: ignore[call-overload]
    zone = Zone(
        domains=(DOMAIN, "in-addr.arpa", "ip6.arpa"),
        mx=[(DOMAIN, 10, HOST)],
        hosts=[(HOST, V4), (HOST, V6)],  # dnsmasq serves their PTRs too
        txt=[(name, text) for name, text in txt.items() if text],
        srv=[
            (f"_submission._tcp.{DOMAIN}", HOST, 587, 10, 1),
            (f"_pop3s._tcp.{DOMAIN}", HOST, 995, 0, 1),
            *[(f"{label}.{DOMAIN}", "", 0, 0, 0) for label in NOT_OFFERED],
        ],
    )
    for key, value in changes.items():
        setattr(zone, key, value)
    return zone


NOT_OFFERED = ("_submissions._tcp", "_imap._tcp", "_imaps._tcp", "_pop3._tcp")


def checked(home: Home, zone: Zone) -> Result:
    with DnsServer(zone) as address:
        set_toml(home, "nameservers = []", f'nameservers = ["{address}"]')
        return run(home, "check", DOMAIN)


def test_records_of_an_initialised_home(home: Home, tmp_path: Path) -> None:
    result = run(home, "records", DOMAIN, "--mta-sts-dir", str(tmp_path / "www"))
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"{DOMAIN}.\t3600\tIN\tMX\t10 {HOST}." in out
    assert f"{HOST}.\t3600\tIN\tAAAA\t{V6}" in out
    assert f"25.2.0.192.in-addr.arpa.\t3600\tIN\tPTR\t{HOST}." in out
    assert f'_dmarc.{DOMAIN}.\t3600\tIN\tTXT\t"{DMARC}"' in out
    assert f'_mta-sts.{DOMAIN}.\t3600\tIN\tTXT\t"{STS}"' in out
    assert f"_submission._tcp.{DOMAIN}.\t3600\tIN\tSRV\t10 1 587 {HOST}." in out
    assert f"_submissions._tcp.{DOMAIN}.\t3600\tIN\tSRV\t0 0 0 ." in out  # loopback only
    assert f"_pop3s._tcp.{DOMAIN}.\t3600\tIN\tSRV\t0 1 995 {HOST}." in out
    assert f"; NOTE: no DKIM keys: run qtoaster dkim keygen {DOMAIN}" in out
    policy = (tmp_path / "www" / ".well-known" / "mta-sts.txt").read_text()
    assert policy == f"version: STSv1\nmode: testing\nmx: {HOST}\nmax_age: 604800\n"


def test_records_settings_change_the_output(home: Home) -> None:
    set_toml(home, 'dmarc_policy = "quarantine"', 'dmarc_policy = "reject"')
    set_toml(home, "# host = ", 'host = "MX.Example.NET."\n# host = ')
    result = run(home, "records", f"{DOMAIN.upper()}.")
    assert result.exit_code == 0, result.output
    assert f"{DOMAIN}.\t3600\tIN\tMX\t10 mx.example.net." in result.output
    assert f'"v=spf1 ip4:{V4} ip6:{V6} -all"' in result.output  # host outside the domain
    assert "p=reject" in result.output


def test_a_domain_not_hosted_is_refused(home: Home) -> None:
    for command in ("records", "check"):
        result = run(home, command, "other.test")
        assert result.exit_code == EXIT_NOT_HOSTED
        assert "other.test is not hosted here" in result.output


def test_bad_publish_setting_names_the_key(home: Home) -> None:
    set_toml(home, 'mta_sts_mode = "testing"', 'mta_sts_mode = "strict"')
    result = run(home, "records", DOMAIN)
    assert result.exit_code == 1
    assert "[publish] mta_sts_mode: must be one of enforce, testing, none" in result.output


def test_check_fully_published_domain_is_all_ok(home: Home) -> None:
    result = checked(home, full_zone())
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if not line.startswith("note:")]
    assert all(line.startswith("ok ") for line in lines), result.output
    assert f"ok      MX {DOMAIN}.: {HOST}." in lines
    assert f"ok      PTR {V6}: {HOST}." in lines
    assert f"ok      A/AAAA {HOST}.: {V4} {V6}" in lines
    assert f'ok      SPF {DOMAIN}.: "{SPF}"' in lines
    assert f"ok      SRV _imap._tcp.{DOMAIN}.: 0 0 0 ." in lines
    assert len(lines) == 14


def test_check_missing_dmarc_and_wrong_spf(home: Home) -> None:
    zone = full_zone(txt={DOMAIN: "v=spf1 ip4:198.51.100.1 -all", f"_dmarc.{DOMAIN}": ""})
    result = checked(home, zone)
    assert result.exit_code == 1, result.output
    out = result.output
    assert f"missing DMARC _dmarc.{DOMAIN}.: expected v=DMARC1; p=..." in out
    assert (
        f'wrong   SPF {DOMAIN}.: found "v=spf1 ip4:198.51.100.1 -all": fail for {V4}, '
        f'fail for {V6}; expected "{SPF}"'
    ) in out
    assert f"ok      MX {DOMAIN}." in out


@pytest.mark.parametrize(
    ("other", "included"),
    [
        (f"v=spf1 ip4:{V4} a:{HOST} ~all", ""),
        ("v=spf1 mx ?all", ""),
        (f"v=spf1 redirect=spf.{DOMAIN}", f"v=spf1 a:{HOST} -all"),
    ],
)
def test_check_a_different_spf_that_passes_is_ok(home: Home, other: str, included: str) -> None:
    """Evaluated by pyspf through the configured server: ip4, a, mx and redirect."""
    zone = full_zone(txt={DOMAIN: other, f"spf.{DOMAIN}": included})
    result = checked(home, zone)
    assert result.exit_code == 0, result.output
    assert f'ok      SPF {DOMAIN}.: "{other}" (not the suggested "{SPF}", but it passes)' in (
        result.output
    )


def test_check_two_spf_records_and_wrong_mx(home: Home) -> None:
    zone = full_zone(mx=[(DOMAIN, 10, "mx.elsewhere.test")])
    zone.txt.append((DOMAIN, "v=spf1 -all"))
    result = checked(home, zone)
    assert result.exit_code == 1, result.output
    assert f"wrong   MX {DOMAIN}.: found mx.elsewhere.test.; expected {HOST}." in result.output
    assert f"wrong   SPF {DOMAIN}.: 2 SPF records (a permerror)" in result.output


def test_check_missing_ptr_and_srv(home: Home) -> None:
    zone = full_zone(hosts=[(HOST, V4)], srv=[])  # no AAAA (hence no PTR for V6), no SRV
    result = checked(home, zone)
    assert result.exit_code == 1, result.output
    assert f"wrong   A/AAAA {HOST}.: found {V4}; expected {V4} {V6}" in result.output
    assert f"missing PTR {V6}: expected {HOST}." in result.output
    assert f"missing SRV _submission._tcp.{DOMAIN}.: expected 10 1 587 {HOST}." in result.output
    assert f'ok      SRV _imap._tcp.{DOMAIN}.: not published (optional: "." says' in (result.output)


def test_check_dns_down_is_temporary(home: Home) -> None:
    server = DnsServer(Zone())
    address = server.start()
    server.stop()  # nothing answers on that port now
    set_toml(home, "nameservers = []", f'nameservers = ["{address}"]')
    set_toml(home, "timeout = 30\n\n[remote]", "timeout = 0.5\n\n[remote]")
    result = run(home, "check", DOMAIN)
    assert result.exit_code == EXIT_TEMPORARY, result.output
    assert "temporary, try again later" in result.output
    assert "missing" not in result.output


def test_check_dkim_records_fed_directly() -> None:
    """dnscheck's DKIM comparison, with a lookup over a real server (the CLI reads no
    keys until mailauth.dkimkeys is wired into cli.dns.dkim_records)."""
    from qtoaster.cli.dns import _Lookup
    from qtoaster.mailauth.dnscheck import check

    key = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA" * 8
    dkim = [
        DkimRecord(f"s1._domainkey.{DOMAIN}", f"v=DKIM1; k=rsa; p={key}", "active"),
        DkimRecord(f"s2._domainkey.{DOMAIN}", f"v=DKIM1; k=rsa; p={key}", "pending"),
        DkimRecord(f"s3._domainkey.{DOMAIN}", "v=DKIM1; k=rsa; p=AAAA", "retiring"),
        DkimRecord(f"s4._domainkey.{DOMAIN}", f"v=DKIM1; k=rsa; p={key}", "active"),
    ]
    published = build_records(DOMAIN, HOST, [], dkim, [], PublishSettings())
    zone = full_zone()
    zone.txt += [
        (f"s1._domainkey.{DOMAIN}", f"v=DKIM1; k=rsa; p={key}"),  # > 255: several strings
        (f"s4._domainkey.{DOMAIN}", "v=DKIM1; k=rsa; p=BBBB"),
    ]
    with DnsServer(zone) as address:
        findings = check(published, dkim, [], _Lookup((address,), 5.0))
    lines = [f.line() for f in findings if f.what.startswith("DKIM")]
    assert lines == [
        f"ok      DKIM s1._domainkey.{DOMAIN}. (active)",
        f"missing DKIM s2._domainkey.{DOMAIN}. (pending): expected the key's TXT record",
        f'wrong   DKIM s4._domainkey.{DOMAIN}. (active): found "v=DKIM1; k=rsa; p=BBBB"; '
        "expected another public key (p=)",
    ]


def test_check_fetched_policy_is_compared() -> None:
    """--fetch: the policy text a web server gives is compared field by field."""
    from qtoaster.cli.dns import _Lookup
    from qtoaster.mailauth.dnscheck import check

    published = build_records(DOMAIN, HOST, [], [], [], PublishSettings())

    def policy_line(fetch: object) -> str:
        with DnsServer(full_zone()) as address:
            findings = check(published, [], [], _Lookup((address,), 5.0), fetch)  # type: ignore[arg-type]
        return next(f.line() for f in findings if f.what.startswith("MTA-STS policy"))

    url = f"https://mta-sts.{DOMAIN}/.well-known/mta-sts.txt"
    same = published.mta_sts_policy.replace("\n", "\r\n")
    assert policy_line(lambda: same) == f"ok      MTA-STS policy {url}"
    other = f"version: STSv1\nmode: enforce\nmx: {HOST}\nmx: old.example.test\nmax_age: 604800\n"
    assert policy_line(lambda: other) == (
        f"wrong   MTA-STS policy {url}: found mode: enforce, mx: {HOST} old.example.test; "
        f"expected mode: testing, mx: {HOST}"
    )

    def refused() -> str:
        raise OSError("connection refused")

    assert policy_line(refused) == f"missing MTA-STS policy {url}: not fetched: connection refused"


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[tuple[str, ssl.SSLContext]]:
    """An HTTPS server on localhost (a real one: http.server with TLS) and a client
    context that trusts its self-signed certificate."""
    pem = tmp_path / "localhost.pem"
    pem.write_bytes(certs.self_signed("localhost"))
    policy = f"version: STSv1\nmode: testing\nmx: {HOST}\nmax_age: 604800\n".encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", "/ok")
                self.end_headers()
                return
            self.send_response(200)
            kind = "text/html" if self.path == "/html" else "text/plain; charset=utf-8"
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(policy)))
            self.end_headers()
            self.wfile.write(policy)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pem)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield (
            f"https://localhost:{server.server_address[1]}",
            ssl.create_default_context(cafile=str(pem)),
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_fetch_policy_over_https(https_server: tuple[str, ssl.SSLContext]) -> None:
    base, trusting = https_server
    text = fetch_policy(f"{base}/ok", 5.0, trusting)
    assert text == f"version: STSv1\nmode: testing\nmx: {HOST}\nmax_age: 604800\n"
    with pytest.raises(OSError, match="302"):  # RFC 8461 3.3: no redirects
        fetch_policy(f"{base}/redirect", 5.0, trusting)
    with pytest.raises(OSError, match="served as text/html, not text/plain"):
        fetch_policy(f"{base}/html", 5.0, trusting)
    with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):  # not trusted
        fetch_policy(f"{base}/ok", 5.0)


def test_records_and_check_use_the_keys_of_dkim_keygen(home: Home) -> None:
    """The key store of `qtoaster dkim` is what `dns records` prints and `dns check` checks."""
    from qtoaster.mailauth.dkimkeys import dkim_dir, generate

    rsa = generate(dkim_dir(home.root), DOMAIN, "rsa")
    ed = generate(dkim_dir(home.root), DOMAIN, "ed25519")
    result = run(home, "records", DOMAIN)
    assert result.exit_code == 0, result.output
    assert "no DKIM keys" not in result.output
    assert f"{rsa.record_name()}.\t3600\tIN\tTXT\t(" in result.output  # split: > 255 bytes
    assert f'{ed.record_name()}.\t3600\tIN\tTXT\t"{ed.txt()}"' in result.output
    # The Ed25519 key published, the RSA key not: one ok line, one missing.
    result = checked(home, full_zone(txt={ed.record_name(): ed.txt()}))
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert any(ed.record_name() in line and line.startswith("ok") for line in lines), lines
    assert any(rsa.record_name() in line and line.startswith("missing") for line in lines), lines
