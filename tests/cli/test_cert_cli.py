"""``qtoaster cert`` through click's CliRunner, and the certificate ``qtoaster init`` makes."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.serialization import Encoding

from qtoaster.cli.cert import cert
from qtoaster.core.home import Home
from qtoaster.tls import certs
from qtoaster.tls.server import server_context, tls_available


@pytest.fixture
def home(tmp_path: Path) -> Home:
    home = Home(tmp_path / "home")
    home.control.mkdir(parents=True)
    (home.control / "me").write_text("mail.example.test\n")
    return home


def run(home: Home, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cert, [args[0], "--home", str(home.root), *args[1:]])
    return result.exit_code, result.output


def test_init_creates_loadable_servercert(tmp_path: Path) -> None:
    pytest.importorskip("qtoaster.queue.store")
    pytest.importorskip("qtoaster.directory.store")
    from qtoaster.cli.newhome import init_home

    home = Home(tmp_path / "new")
    init_home(home, "mail.example.test", demo=True)
    path = home.control / "servercert.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert tls_available(home.control)
    leaf = certs.load_bundle(path.read_bytes()).certs[0]
    assert certs.dns_names(leaf) == ["mail.example.test"]


def test_show_missing(home: Home) -> None:
    code, out = run(home, "show")
    assert code == 1
    assert "missing: STARTTLS and SMTPS are not offered" in out


def test_self_signed_then_show(home: Home) -> None:
    code, out = run(home, "self-signed", "--days", "365")
    assert code == 0, out
    path = home.control / "servercert.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert server_context(home.control) is not None
    code, out = run(home, "show")
    assert code == 0, out
    assert "subject: CN=mail.example.test" in out
    assert "tlsclients: 0 address(es)" in out
    assert "warning:" not in out


def test_self_signed_refuses_then_forces_keeping_old(home: Home) -> None:
    assert run(home, "self-signed")[0] == 0
    first = (home.control / "servercert.pem").read_bytes()
    code, out = run(home, "self-signed")
    assert code == 1 and "--force" in out
    code, out = run(home, "self-signed", "--force", "--name", "smtp.example.test")
    assert code == 0, out
    assert (home.control / "servercert.pem.old").read_bytes() == first
    assert "smtp.example.test" in out


def test_show_warns_expiring_mismatch_and_mode(home: Home) -> None:
    pem = certs.self_signed("other.example.test", days=5)
    path = home.control / "servercert.pem"
    path.write_bytes(pem)
    path.chmod(0o644)
    code, out = run(home, "show")
    assert code == 0, out
    assert "warning: expires in 4 days" in out or "warning: expires in 5 days" in out
    assert "warning: does not name mail.example.test (control/me)" in out
    assert "readable by others than its owner" in out


def test_show_expired_and_unusable(home: Home) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
    pem = certs.self_signed("mail.example.test", days=10, not_before=past)
    (home.control / "servercert.pem").write_bytes(pem)
    code, out = run(home, "show")
    assert "warning: expired on" in out
    (home.control / "servercert.pem").write_bytes(pem[pem.index(b"-----BEGIN CERT") :])
    code, out = run(home, "show")
    assert code == 1
    assert "warning: TLS not available: no valid RSA private key" in out


def test_show_client_side(home: Home) -> None:
    run(home, "self-signed")
    ca = certs.load_bundle(certs.self_signed("Test CA", days=5)).certs[0]
    (home.control / "clientca.pem").write_bytes(ca.public_bytes(Encoding.PEM))
    (home.control / "tlsclients").write_text("alice@example.test\nbob@example.test\n")
    (home.control / "rsa512.pem").write_text("old\n")
    code, out = run(home, "show")
    assert code == 0, out
    assert "clientca.pem: 1 CA certificate(s)\n  CN=Test CA" in out
    assert "tlsclients: 2 address(es)" in out
    assert "client certificates are asked for" in out
    assert "rsa512.pem: ignored" in out


def test_key_csr_install(home: Home, tmp_path: Path) -> None:
    key = tmp_path / "new.key"
    request = tmp_path / "new.csr"
    assert CliRunner().invoke(cert, ["key", "--out", str(key), "--type", "ec"]).exit_code == 0
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert CliRunner().invoke(cert, ["key", "--out", str(key)]).exit_code == 1  # never clobber
    code, out = run(home, "csr", "--key", str(key), "--out", str(request), "--name", "mx.test")
    assert code == 0, out
    assert "request for mail.example.test, mx.test" in out
    # Play the CA: sign the request with a self-signed issuer.
    signed = _sign(request.read_bytes())
    crt = tmp_path / "new.crt"
    crt.write_bytes(signed)
    other_key = tmp_path / "other.key"
    other_key.write_bytes(certs.new_key("ec"))
    code, out = run(home, "install", str(crt), "--key", str(other_key))
    assert code == 1 and "does not match" in out
    assert not (home.control / "servercert.pem").exists()
    code, out = run(home, "install", str(crt), "--key", str(key))
    assert code == 0, out
    assert "warning" not in out
    path = home.control / "servercert.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert tls_available(home.control)


def _sign(request_pem: bytes) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    request = x509.load_pem_x509_csr(request_pem)
    issuer_key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    issuer = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "CA")])
    san = request.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    signed = (
        x509.CertificateBuilder()
        .subject_name(request.subject)
        .issuer_name(issuer)
        .public_key(request.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=90))
        .add_extension(san.value, critical=False)
        .sign(issuer_key, hashes.SHA256())
    )
    return signed.public_bytes(Encoding.PEM)
