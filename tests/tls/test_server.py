"""Server contexts from control files (spec 7.1), relay by client certificate (7.3)."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import dh
from cryptography.hazmat.primitives.serialization import Encoding, ParameterFormat

from qtoaster.config.rolecontrols import load_tls_server
from qtoaster.tls.certs import self_signed
from qtoaster.tls.server import (
    TlsError,
    TlsSettings,
    client_cert_relay,
    describe,
    nogateway_suffix,
    read_settings,
    server_context,
    session_summary,
    tls_available,
)

from .pki import PrivateCA, client_context, handshake


@pytest.fixture(scope="module")
def servercert() -> bytes:
    return self_signed("mail.example.test")


@pytest.fixture
def control(tmp_path: Path, servercert: bytes) -> Path:
    control = tmp_path / "control"
    control.mkdir()
    (control / "servercert.pem").write_bytes(servercert)
    return control


@pytest.fixture(scope="module")
def ca() -> PrivateCA:
    return PrivateCA()


def with_client_ca(control: Path, ca: PrivateCA, clients: str = "alice@example.test\n") -> None:
    (control / "clientca.pem").write_bytes(ca.cert_pem)
    (control / "tlsclients").write_text(clients)


# -- versions and ciphers ------------------------------------------------------------


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls12_and_tls13_handshake(control: Path, version: ssl.TLSVersion) -> None:
    server, client = handshake(server_context(control), client_context(maximum=version))
    assert server.version() == client.version() == version.name.replace("_", ".")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
def test_tls11_is_refused(control: Path) -> None:
    with pytest.raises(ssl.SSLError, match="UNSUPPORTED_PROTOCOL"):
        handshake(server_context(control), client_context(maximum=ssl.TLSVersion.TLSv1_1))


def test_min_version_tls13_refuses_tls12(control: Path) -> None:
    ctx = server_context(control, min_version="TLSv1.3")
    with pytest.raises(ssl.SSLError):
        handshake(ctx, client_context(maximum=ssl.TLSVersion.TLSv1_2))


def test_unknown_min_version_is_a_value_error(control: Path) -> None:
    with pytest.raises(ValueError, match=r"TLSv1\.1"):
        TlsSettings(certfile=control / "servercert.pem", min_version="TLSv1.1")


def test_tlsserverciphers_lines_joined_with_colons(control: Path) -> None:
    (control / "tlsserverciphers").write_text("# comment\nECDHE-RSA-AES128-GCM-SHA256\n\n")
    assert read_settings(control).ciphers == "ECDHE-RSA-AES128-GCM-SHA256"
    (control / "tlsserverciphers").write_text("ECDHE-RSA-AES128-GCM-SHA256\nAES256-SHA\n")
    assert read_settings(control).ciphers == "ECDHE-RSA-AES128-GCM-SHA256:AES256-SHA"
    server, _ = handshake(server_context(control), client_context(maximum=ssl.TLSVersion.TLSv1_2))
    cipher = server.cipher()
    assert cipher is not None and cipher[0] == "ECDHE-RSA-AES128-GCM-SHA256"


def test_env_tlsciphers_overrides_file_and_tls13_untouched(control: Path) -> None:
    (control / "tlsserverciphers").write_text("ECDHE-RSA-AES128-GCM-SHA256\n")
    ctx = server_context(control, env_ciphers="ECDHE-RSA-CHACHA20-POLY1305")
    server, _ = handshake(ctx, client_context(maximum=ssl.TLSVersion.TLSv1_2))
    assert server.cipher()[0] == "ECDHE-RSA-CHACHA20-POLY1305"  # type: ignore[index]
    server, _ = handshake(ctx, client_context())
    assert server.version() == "TLSv1.3"
    assert server.cipher()[0].startswith("TLS_")  # type: ignore[index]


def test_empty_env_tlsciphers_means_default(control: Path) -> None:
    (control / "tlsserverciphers").write_text("ECDHE-RSA-AES128-GCM-SHA256\n")
    assert read_settings(control, env_ciphers="").ciphers is None


def test_cipher_list_selecting_nothing_is_an_error(control: Path) -> None:
    (control / "tlsserverciphers").write_text("NO-SUCH-CIPHER\n")
    with pytest.raises(TlsError, match="unable to set cipher list"):
        server_context(control)


# -- servercert.pem ------------------------------------------------------------------


def test_missing_certificate(tmp_path: Path) -> None:
    with pytest.raises(TlsError) as info:
        server_context(tmp_path)
    assert str(info.value) == "missing certificate"
    assert not tls_available(tmp_path)


def test_certificate_without_key(control: Path, servercert: bytes) -> None:
    cert_only = servercert[servercert.index(b"-----BEGIN CERTIFICATE") :]
    (control / "servercert.pem").write_bytes(cert_only)
    with pytest.raises(TlsError) as info:
        server_context(control)
    assert info.value.reason == "no valid RSA private key"
    assert str(info.value).startswith("no valid RSA private key: ")


def test_key_of_another_certificate(control: Path, servercert: bytes) -> None:
    other = self_signed("other.example.test")
    key = other[: other.index(b"-----BEGIN CERTIFICATE")]
    cert = servercert[servercert.index(b"-----BEGIN CERTIFICATE") :]
    (control / "servercert.pem").write_bytes(key + cert)
    with pytest.raises(TlsError, match="no valid RSA private key"):
        server_context(control)


def test_garbage_is_missing_certificate(control: Path) -> None:
    (control / "servercert.pem").write_text("not a certificate\n")
    with pytest.raises(TlsError) as info:
        server_context(control)
    assert info.value.reason == "missing certificate"


def test_tls_available(control: Path) -> None:
    assert tls_available(control)


def test_chain_is_sent(control: Path, ca: PrivateCA) -> None:
    _, leaf = ca.issue("mail.example.test", dns=["mail.example.test"])
    (control / "servercert.pem").write_bytes(leaf + ca.cert_pem)
    verifying = ssl.create_default_context(cadata=ca.cert_pem.decode())
    verifying.check_hostname = False
    handshake(server_context(control), verifying)  # verifies against our CA only


# -- dh and rsa files: accepted, never fatal ------------------------------------------


@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
def test_dh_rsa_files_never_raise(control: Path, caplog: pytest.LogCaptureFixture) -> None:
    small = dh.generate_parameters(generator=2, key_size=512)
    (control / "dh1024.pem").write_bytes(small.parameter_bytes(Encoding.PEM, ParameterFormat.PKCS3))
    (control / "dh512.pem").write_text("garbage\n")
    (control / "rsa512.pem").write_text("garbage\n")
    with caplog.at_level(logging.WARNING):
        ctx = server_context(control)
    assert "dh1024.pem: ignored" in caplog.text  # too small for OpenSSL's security level
    handshake(ctx, client_context())
    (control / "dh1024.pem").write_text("garbage\n")
    handshake(server_context(control), client_context(maximum=ssl.TLSVersion.TLSv1_2))


# -- client certificates --------------------------------------------------------------


def test_no_client_cert_request_without_tlsclients(control: Path, ca: PrivateCA) -> None:
    (control / "clientca.pem").write_bytes(ca.cert_pem)
    assert server_context(control).verify_mode == ssl.CERT_NONE
    (control / "tlsclients").write_text("# nobody yet\n")
    assert server_context(control).verify_mode == ssl.CERT_NONE


def test_client_cert_optional(control: Path, ca: PrivateCA) -> None:
    with_client_ca(control, ca)
    ctx = server_context(control)
    assert ctx.verify_mode == ssl.CERT_OPTIONAL
    server, _ = handshake(ctx, client_context())  # no certificate: still fine
    assert client_cert_relay(server, control) == (False, "")


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_relay_by_listed_email(control: Path, ca: PrivateCA, version: ssl.TLSVersion) -> None:
    with_client_ca(control, ca, "# relays\nALICE@example.test\n")
    _, pem = ca.issue("alice", email="alice@EXAMPLE.test")
    server, _ = handshake(server_context(control), client_context(cert_pem=pem, maximum=version))
    assert client_cert_relay(server, control) == (True, "alice@EXAMPLE.test")
    assert describe(server, "alice@EXAMPLE.test").endswith("\n  (cert alice@EXAMPLE.test)")


def test_relay_refused_for_unlisted_email(control: Path, ca: PrivateCA) -> None:
    with_client_ca(control, ca)
    _, pem = ca.issue("bob", email="bob@example.test")
    server, _ = handshake(server_context(control), client_context(cert_pem=pem))
    reason = "email address not in my list of tlsclients"
    assert client_cert_relay(server, control) == (False, reason)
    assert nogateway_suffix(reason) == f"; no valid cert for gatewaying: {reason}"
    assert nogateway_suffix("") == "; no valid cert for gatewaying"


def test_relay_refused_without_email(control: Path, ca: PrivateCA) -> None:
    with_client_ca(control, ca)
    _, pem = ca.issue("carol")
    server, _ = handshake(server_context(control), client_context(cert_pem=pem))
    assert client_cert_relay(server, control) == (False, "contains no email address")


def test_tlsclients_removed_later_refuses(control: Path, ca: PrivateCA) -> None:
    with_client_ca(control, ca)
    _, pem = ca.issue("alice", email="alice@example.test")
    server, _ = handshake(server_context(control), client_context(cert_pem=pem))
    (control / "tlsclients").unlink()
    assert client_cert_relay(server, control) == (False, "")


def test_foreign_client_cert_fails_handshake(control: Path, ca: PrivateCA) -> None:
    # The documented departure from qmail: Python's ssl has no verify callback.
    with_client_ca(control, ca)
    _, pem = PrivateCA("someone else").issue("alice", email="alice@example.test")
    with pytest.raises(ssl.SSLError):
        handshake(server_context(control), client_context(cert_pem=pem))


def test_revoked_client_cert_refused(control: Path, ca: PrivateCA) -> None:
    with_client_ca(control, ca)
    _, good_pem = ca.issue("alice", email="alice@example.test")
    revoked, revoked_pem = ca.issue("alice2", email="alice@example.test")
    (control / "clientcrl.pem").write_bytes(ca.crl([revoked]))
    ctx = server_context(control)
    assert ctx.verify_flags & ssl.VERIFY_CRL_CHECK_CHAIN
    server, _ = handshake(ctx, client_context(cert_pem=good_pem))
    assert client_cert_relay(server, control) == (True, "alice@example.test")
    with pytest.raises(ssl.SSLError):
        handshake(ctx, client_context(cert_pem=revoked_pem))


def test_broken_clientcrl_disables_cert_request(control: Path, ca: PrivateCA) -> None:
    with_client_ca(control, ca)
    (control / "clientcrl.pem").write_text("garbage\n")
    warnings: list[str] = []
    ctx = server_context(control, warn=warnings.append)
    assert ctx.verify_mode == ssl.CERT_NONE
    assert warnings and "clientcrl.pem" in warnings[0]


def test_require_client_cert(control: Path, ca: PrivateCA) -> None:
    with pytest.raises(TlsError, match=r"missing clientca\.pem"):
        server_context(control, require_client_cert=True)
    (control / "clientca.pem").write_bytes(ca.cert_pem)
    ctx = server_context(control, require_client_cert=True)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(ssl.SSLError):
        handshake(ctx, client_context())


# -- descriptions ---------------------------------------------------------------------


def test_describe_and_summary(control: Path) -> None:
    server, _ = handshake(server_context(control), client_context())
    name = server.cipher()[0]  # type: ignore[index]
    assert describe(server) == f"({server.version()} {name} encrypted) SMTP"
    assert session_summary(server).startswith(f"TLSv1.3 {name} ")


# -- typed control files (config.rolecontrols) ------------------------------------------


def test_typed_controls_build_the_same_context(control: Path, ca: PrivateCA) -> None:
    with_client_ca(control, ca)
    (control / "tlsserverciphers").write_text("ECDHE-ECDSA-AES128-GCM-SHA256\n")
    loaded = load_tls_server(control)
    assert TlsSettings.from_controls(loaded) == read_settings(control)
    assert TlsSettings.from_controls(loaded, env_ciphers="").ciphers is None
    ctx = server_context(loaded)
    assert ctx.verify_mode == ssl.CERT_OPTIONAL
    assert tls_available(loaded)


def test_typed_tlsclients_are_not_read_again(control: Path, ca: PrivateCA) -> None:
    with_client_ca(control, ca)
    loaded = load_tls_server(control)
    _, pem = ca.issue("alice", email="alice@example.test")
    server, _ = handshake(server_context(loaded), client_context(cert_pem=pem))
    (control / "tlsclients").unlink()  # a reload would see this; the loaded list does not
    assert client_cert_relay(server, loaded.tlsclients) == (True, "alice@example.test")
    assert client_cert_relay(server, frozenset()) == (False, "")


def test_unreadable_tls_controls_are_qmails_die_control(control: Path) -> None:
    (control / "tlsclients").mkdir()  # EISDIR, as root too
    with pytest.raises(TlsError, match="unable to read controls"):
        server_context(control)
