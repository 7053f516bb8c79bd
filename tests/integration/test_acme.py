"""``qtoaster cert acme`` against a real ACME CA: Debian's pebble on loopback.

The CA resolves mx.example.test through dnsmasq (tests/dnsserver.py) to 127.0.0.1 and
checks HTTP-01 on the port our responder listens on. Covered: issue (the certificate is
signed by pebble's intermediate), no renewal while more than a third is left (the CA is
not contacted), --force renews, a running server reloads (a session opened before keeps
going, a new one sees the new certificate), and the failures (CA unreachable, challenge
failed) leave servercert.pem as it was.
"""

from __future__ import annotations

import grp
import os
import smtplib
import ssl
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from tests.dnsserver import DnsServer, Zone
from tests.pebbleserver import Pebble, free_port

from .harness import Server, make_home, qt, wait_for_mail, wait_until

pytestmark = pytest.mark.integration
NAME = "mx.example.test"


@dataclass
class Ca:
    pebble: Pebble
    http_port: int

    def acme(self, home: Path, *extra: str, check: bool = True) -> tuple[int, str, str]:
        result = qt(
            home, "cert", "acme",
            "--directory", self.pebble.directory,
            "--ca-bundle", str(self.pebble.ca_bundle),
            "--http-listen", f"127.0.0.1:{self.http_port}",
            *extra, check=False,
        )  # fmt: skip
        out, err = result.stdout.decode(), result.stderr.decode()
        if check:
            assert result.returncode == 0, out + err
        return result.returncode, out, err


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ca]:
    zone = Zone(domains=("test",), hosts=[(NAME, "127.0.0.1"), ("smtp.example.test", "127.0.0.1")])
    http_port = free_port()
    with DnsServer(zone) as dns:
        work = tmp_path_factory.mktemp("pebble")
        with Pebble(work, dns=dns, http_port=http_port) as pebble:
            yield Ca(pebble, http_port)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return make_home(tmp_path, me=NAME)


def leaf(home: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificates((home / "control/servercert.pem").read_bytes())[0]


def test_issue_then_no_renewal_then_force(ca: Ca, home: Path) -> None:
    _, out, _ = ca.acme(home)
    assert f"ordering a certificate for {NAME}" in out
    first = leaf(home)
    intermediate = ca.pebble.intermediate()
    assert first.issuer == intermediate.subject
    first.verify_directly_issued_by(intermediate)
    names = first.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [NAME]
    servercert = home / "control/servercert.pem"
    assert stat.S_IMODE(servercert.stat().st_mode) in (0o600, 0o640)  # 0640: root's tls group
    key = home / "acme/account.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and key.stat().st_uid == 0
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert qt(home, "config", "check", check=False).returncode == 0

    log_size = len(ca.pebble.log())
    _, out, _ = ca.acme(home)
    assert "no renewal needed: valid until" in out
    assert leaf(home) == first
    assert len(ca.pebble.log()) == log_size  # the CA was not asked

    _, out, _ = ca.acme(home, "--force")
    assert "(forced)" in out
    second = leaf(home)
    assert second != first and second.issuer == intermediate.subject
    old_path = home / "control/servercert.pem.old"
    assert x509.load_pem_x509_certificates(old_path.read_bytes())[0] == first
    if os.geteuid() == 0:  # the old key is the TLS group's too, not every role's
        assert old_path.stat().st_gid == grp.getgrnam("qtoaster-tls").gr_gid
        assert stat.S_IMODE(old_path.stat().st_mode) == 0o640


def test_other_names_order_again(ca: Ca, home: Path) -> None:
    ca.acme(home)
    _, out, _ = ca.acme(home, "--name", NAME, "--name", "smtp.example.test")
    assert "the installed certificate is for mx.example.test" in out
    names = leaf(home).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(names.get_values_for_type(x509.DNSName)) == [NAME, "smtp.example.test"]


def test_ca_unreachable_leaves_the_certificate(home: Path, tmp_path: Path) -> None:
    before = (home / "control/servercert.pem").read_bytes()
    dead = f"https://127.0.0.1:{free_port()}/dir"
    result = qt(home, "cert", "acme", "--directory", dead, "--http-listen", "127.0.0.1:0",
                check=False)  # fmt: skip
    err = result.stderr.decode()
    assert result.returncode == 1
    assert err.startswith(f"qtoaster: cannot reach the ACME server {dead}: "), err
    assert "Connection refused" in err and "is unchanged" in err
    assert (home / "control/servercert.pem").read_bytes() == before


def test_challenge_failed_leaves_the_certificate(ca: Ca, home: Path) -> None:
    before = (home / "control/servercert.pem").read_bytes()
    code, _, err = ca.acme(home, "--name", "nowhere.example.test", check=False)
    assert code == 1
    assert err.startswith("qtoaster: challenge failed: nowhere.example.test: "), err
    assert (home / "control/servercert.pem").read_bytes() == before


def _starttls(port: int) -> tuple[smtplib.SMTP, bytes]:
    context = ssl.create_default_context(cafile=None)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the fingerprint is what is compared
    smtp = smtplib.SMTP("127.0.0.1", port, timeout=30)
    smtp.ehlo("client.example.test")
    smtp.starttls(context=context)
    smtp.ehlo("client.example.test")
    sock = smtp.sock
    assert isinstance(sock, ssl.SSLSocket)
    der = sock.getpeercert(binary_form=True)
    assert der is not None
    return smtp, der


def _sha256(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).fingerprint(hashes.SHA256())


def test_renewal_reloads_a_running_server(ca: Ca, home: Path) -> None:
    ca.acme(home)
    server = Server(home, workers=1)
    try:
        before = leaf(home).fingerprint(hashes.SHA256())
        open_session, der = _starttls(server.port)
        assert _sha256(der) == before
        open_session.mail("alice@example.test")
        open_session.rcpt("bob@example.test")

        _, out, _ = ca.acme(home, "--force")
        assert f"sent SIGHUP to the server (pid {server.proc.pid})" in out
        after = leaf(home).fingerprint(hashes.SHA256())
        assert after != before

        seen: list[bytes] = []

        def new_certificate() -> bool:
            smtp, der = _starttls(server.port)
            smtp.quit()
            seen.append(_sha256(der))
            return seen[-1] == after

        wait_until(new_certificate, timeout=20, what="a new session with the new certificate")
        # The session opened before the reload finishes its message.
        code, _ = open_session.data(b"Subject: across the reload\r\n\r\nbody\r\n")
        assert code == 250
        open_session.quit()
        wait_for_mail(home, "bob", b"Subject: across the reload")
        assert "reloaded" in (home / "server.log").read_text()
    finally:
        server.stop()


def test_no_reload_flag_and_no_server(ca: Ca, home: Path) -> None:
    _, out, _ = ca.acme(home, "--no-reload")
    assert "SIGHUP" not in out and "nothing to reload" not in out
    _, out, _ = ca.acme(home, "--force")
    assert "no server is running on this home: nothing to reload" in out
