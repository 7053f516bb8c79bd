"""Keys, self-signed certificates, requests, bundles, warnings, atomic 0600 writes."""

from __future__ import annotations

import datetime as dt
import os
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from qtoaster.tls import certs

from .pki import PrivateCA

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)  # X.509 times are whole seconds


@pytest.fixture(scope="module")
def pem() -> bytes:
    return certs.self_signed("mail.example.test", days=90)


def test_self_signed_is_rsa_key_then_cert_and_loads(pem: bytes, tmp_path: Path) -> None:
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    bundle = certs.load_bundle(pem)
    assert isinstance(bundle.key, rsa.RSAPrivateKey) and bundle.key.key_size == 2048
    (cert,) = bundle.certs
    assert certs.dns_names(cert) == ["mail.example.test"]
    assert cert.issuer == cert.subject
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(days=90, hours=1)
    path = tmp_path / "servercert.pem"
    path.write_bytes(pem)
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(path)


def test_self_signed_ip_address() -> None:
    cert = certs.load_bundle(certs.self_signed("192.0.2.1", days=1)).certs[0]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["192.0.2.1"]


def test_new_key_kinds() -> None:
    key = serialization.load_pem_private_key(certs.new_key("ec"), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    with pytest.raises(ValueError, match="dsa"):
        certs.new_key("dsa")


def test_csr_names_and_signature() -> None:
    key_pem = certs.new_key("ec")
    request = x509.load_pem_x509_csr(
        certs.csr(key_pem, "mail.example.test", ["smtp.example.test", "mail.example.test"])
    )
    assert request.is_signature_valid
    assert request.subject.rfc4514_string() == "CN=mail.example.test"
    san = request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mail.example.test", "smtp.example.test"]


def test_summary(pem: bytes) -> None:
    lines = certs.summary(pem)
    assert lines[0] == "subject: CN=mail.example.test"
    assert "names: mail.example.test" in lines
    assert "key: RSA 2048 bits" in lines
    assert any(line.startswith("sha256 fingerprint: ") for line in lines)
    assert lines[-1] == "private key: RSA 2048 bits, matches the certificate"
    assert certs.summary(b"") == ["no certificate"]


def test_combine_checks_the_key(pem: bytes) -> None:
    ca = PrivateCA()
    _, leaf = ca.issue("mail.example.test", dns=["mail.example.test"])
    key = leaf[: leaf.index(b"-----BEGIN CERTIFICATE")]
    cert = leaf[len(key) :]
    combined = certs.combine(cert + ca.cert_pem, key)
    bundle = certs.load_bundle(combined)
    assert len(bundle.certs) == 2 and bundle.key is not None
    with pytest.raises(ValueError, match="does not match"):
        certs.combine(cert, pem)
    with pytest.raises(ValueError, match="no private key"):
        certs.combine(cert, cert)
    with pytest.raises(ValueError, match="no certificate"):
        certs.combine(key, key)


def test_encrypted_key_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    with pytest.raises(ValueError, match="private key"):
        certs.load_bundle(encrypted)


def test_warnings() -> None:
    pem = certs.self_signed("mail.example.test", days=10, not_before=NOW)
    soon = certs.load_bundle(pem).certs[0]
    assert soon.not_valid_after_utc == NOW + dt.timedelta(days=10)
    assert certs.warnings(soon, "mail.example.test", NOW + dt.timedelta(seconds=1)) == [
        f"expires in 9 days, on {soon.not_valid_after_utc:%Y-%m-%d}"
    ]
    assert certs.warnings(soon, "MAIL.example.test.", NOW - dt.timedelta(days=1))[-1] == (
        f"not valid before {soon.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
    )
    later = NOW + dt.timedelta(days=11)
    assert certs.warnings(soon, "other.example.test", later) == [
        f"expired on {soon.not_valid_after_utc:%Y-%m-%d}",
        "does not name other.example.test (control/me)",
    ]


def test_wildcard_names() -> None:
    _, leaf = PrivateCA().issue("x", dns=["*.example.test"])
    cert = certs.load_bundle(leaf).certs[0]
    assert certs.name_matches(cert, "mail.example.test")
    assert not certs.name_matches(cert, "example.test")
    assert not certs.name_matches(cert, "a.mail.example.test")


def test_write_private_mode_and_old(tmp_path: Path) -> None:
    path = tmp_path / "servercert.pem"
    certs.write_private(path, b"one")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    certs.write_private(path, b"two", keep_old=True)
    assert path.read_bytes() == b"two"
    assert (tmp_path / "servercert.pem.old").read_bytes() == b"one"
    certs.write_private(path, b"three", keep_old=True)
    assert (tmp_path / "servercert.pem.old").read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["servercert.pem", "servercert.pem.old"]


def test_write_private_replacing_takes_over_owner_and_mode(tmp_path: Path) -> None:
    # A renewal must not leave servercert.pem unreadable to the roles' TLS group until
    # give_owners runs: the new file takes the old one's group and mode before the rename.
    path = tmp_path / "servercert.pem"
    certs.write_private(path, b"old")
    group = os.getgid() if os.geteuid() != 0 else 65534
    os.chown(path, os.geteuid(), group)
    os.chmod(path, 0o640)
    certs.write_private(path, b"new", keep_old=True)
    st = path.stat()
    assert path.read_bytes() == b"new"
    assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (group, 0o640)


def test_write_private_never_wider_than_0640(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(b"old")
    os.chmod(path, 0o644)
    certs.write_private(path, b"new")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_write_private_first_file_is_0600(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    certs.write_private(path, b"new")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
