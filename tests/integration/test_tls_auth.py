"""STARTTLS, SMTPS, submission and SMTP AUTH end to end, with swaks, smtplib and openssl.

Every test runs on SQLite and PostgreSQL (conftest.py): AUTH reads the directory.
"""

from __future__ import annotations

import base64
import datetime as dt
import shutil
import smtplib
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .harness import Server, qt, wait_for_mail

SWAKS = shutil.which("swaks") or "swaks"
OPENSSL = shutil.which("openssl") or "openssl"


def _settings(home: Path, **values: str) -> None:
    """Replace ``key = value`` lines of qtoaster.toml (the key must be there)."""
    path = home / "qtoaster.toml"
    lines = path.read_text().splitlines()
    for key, value in values.items():
        table, _, name = key.partition("__")
        section = ""
        for i, line in enumerate(lines):
            if line.startswith("["):
                section = line.strip("[]")
            elif section == table and line.startswith(f"{name} ="):
                lines[i] = f"{name} = {value}"
                break
        else:
            raise AssertionError(f"no {name} in [{table}]")
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def tls_server(home: Path) -> Iterator[Server]:
    _settings(home, auth__failure_delay="0.2")
    srv = Server(home, "--submission", "127.0.0.1:0", "--smtps", "127.0.0.1:0", workers=1)
    yield srv
    srv.stop()


def swaks(*args: str) -> str:
    result = subprocess.run(
        [SWAKS, "--server", "127.0.0.1", "--timeout", "20", *args],
        capture_output=True,
        timeout=60,
    )
    return result.stdout.decode(errors="replace")


def test_submission_starttls_auth_plain_delivers_with_received_line(tls_server: Server) -> None:
    out = swaks(
        "--port", str(tls_server.ports["submission"]), "--tls",
        "--auth", "PLAIN", "--auth-user", "alice@example.test", "--auth-password", "secret",
        "--from", "alice@example.test", "--to", "bob@example.test",
        "--header", "Subject: over tls",
    )  # fmt: skip
    assert "<~  235 2.0.0 ok, go ahead (#2.0.0)" in out, out
    message = wait_for_mail(tls_server.home, "bob", b"Subject: over tls")
    received = message.split(b"Received: ", 2)[1]
    assert b"(alice@example.test@127.0.0.1)" in received  # the user, as the auth patch shows
    assert b"(TLSv1.3 TLS_" in received and b" encrypted) SMTP;" in received  # version, cipher


def test_smtps_auth_login(tls_server: Server) -> None:
    out = swaks(
        "--port", str(tls_server.ports["smtps"]), "--tlsc",
        "--auth", "LOGIN", "--auth-user", "alice@example.test", "--auth-password", "secret",
        "--from", "alice@example.test", "--to", "carol@example.test",
    )  # fmt: skip
    assert "TLS started with cipher" in out
    assert "<~  235 2.0.0 ok, go ahead (#2.0.0)" in out, out
    assert "STARTTLS" not in out.split("EHLO", 1)[1].split("AUTH LOGIN", 1)[0]


def test_auth_cram_md5_with_secrets_kept(home: Path) -> None:
    # CRAM-MD5 is offered only when every account keeps secrets.
    qt(home, "domain", "set", "example.test", "--secrets")
    qt(home, "user", "passwd", "alice@example.test", "--password", "tanstaaf")
    for user in ("bob", "carol"):
        qt(home, "user", "passwd", f"{user}@example.test", "--password", "secret")
    srv = Server(home, workers=1)
    try:
        out = swaks(
            "--port", str(srv.port), "--auth", "CRAM-MD5",
            "--auth-user", "alice@example.test", "--auth-password", "tanstaaf",
            "--from", "alice@example.test", "--to", "bob@example.test",
        )  # fmt: skip
        assert "250-AUTH CRAM-MD5" in out  # not PLAIN/LOGIN: no TLS on this connection
        assert "<-  235 2.0.0 ok, go ahead (#2.0.0)" in out, out
    finally:
        srv.stop()


def test_smtplib_starttls_login_and_relay(tls_server: Server) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", tls_server.port, timeout=30) as client:
        client.ehlo()
        assert client.has_extn("starttls") and not client.has_extn("auth")
        client.starttls(context=ctx)
        client.ehlo()
        # smtplib joins the "AUTH" and the old "AUTH=" lines of the seed's EHLO.
        assert client.esmtp_features["auth"].split() == ["LOGIN", "PLAIN"] * 2
        client.login("bob@example.test", "secret")
        # Authenticated: a remote recipient is accepted (relay), and queued.
        refused = client.sendmail("bob@example.test", ["x@far.test"], b"Subject: out\r\n\r\nx\r\n")
        assert refused == {}


def test_many_handshakes_in_a_row(tls_server: Server) -> None:
    # The ClientHello follows the 220 at once: it must reach TLS, never the clear-text
    # engine (a race that once hung handshakes).
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    for _ in range(10):
        with smtplib.SMTP("127.0.0.1", tls_server.port, timeout=10) as client:
            client.starttls(context=ctx)
            assert client.ehlo()[0] == 250
        with smtplib.SMTP_SSL("127.0.0.1", tls_server.ports["smtps"], context=ctx, timeout=10):
            pass


def test_auth_refused_before_tls_and_submission_requires_auth(tls_server: Server) -> None:
    with smtplib.SMTP("127.0.0.1", tls_server.port, timeout=30) as client:
        client.ehlo()
        code, text = client.docmd("AUTH", "PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQ=")
        assert (code, text) == (
            538,
            b"5.7.11 encryption required for requested authentication mechanism (#5.7.11)",
        )
    with smtplib.SMTP("127.0.0.1", tls_server.ports["submission"], timeout=30) as client:
        client.ehlo()
        code, text = client.mail("alice@example.test")
        assert (code, text) == (530, b"5.7.0 authentication required (#5.7.0)")


def _reply(f: object) -> bytes:
    while True:
        line: bytes = f.readline()  # type: ignore[attr-defined]
        if line[3:4] != b"-":
            return line


def test_starttls_injection_is_not_executed(tls_server: Server) -> None:
    sock = socket.create_connection(("127.0.0.1", tls_server.port), timeout=30)
    f = sock.makefile("rb")
    _reply(f)
    sock.sendall(b"EHLO x\r\n")
    _reply(f)
    # The injected MAIL arrives in the same packet as STARTTLS (CVE-2011-0411 class).
    sock.sendall(b"STARTTLS\r\nMAIL FROM:<evil@far.test>\r\n")
    assert _reply(f) == b"220 2.0.0 ready for tls\r\n"
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    tls = ctx.wrap_socket(sock, server_hostname="mx.example.test")
    g = tls.makefile("rb")
    tls.sendall(b"RCPT TO:<alice@example.test>\r\n")
    assert _reply(g) == b"503 MAIL first (#5.5.1)\r\n"  # the MAIL was never executed
    tls.close()


@pytest.mark.parametrize(
    ("flag", "works"), [("-tls1_1", False), ("-tls1_2", True), ("-tls1_3", True)]
)
def test_openssl_protocol_versions(tls_server: Server, flag: str, works: bool) -> None:
    result = subprocess.run(
        [OPENSSL, "s_client", "-connect", f"127.0.0.1:{tls_server.port}", "-starttls", "smtp",
         flag, "-brief"],
        input=b"QUIT\r\n",
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    output = (result.stdout + result.stderr).decode(errors="replace")
    assert ("Protocol version" in output and "CONNECTION ESTABLISHED" in output) == works, output
    if works:
        assert "mx.example.test" in output  # the self-signed certificate of qtoaster init


def test_brute_force_slows_down_and_closes(tls_server: Server) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE

    wrong = base64.b64encode(b"\0alice@example.test\0wrong").decode()

    def attempt(client: smtplib.SMTP) -> float:
        # One AUTH command (smtplib's login() would try every mechanism in turn).
        started = time.monotonic()
        code, _ = client.docmd("AUTH", f"PLAIN {wrong}")
        assert code == 535
        return time.monotonic() - started

    client = smtplib.SMTP("127.0.0.1", tls_server.port, timeout=30)
    client.starttls(context=ctx)
    client.ehlo()
    first, second = attempt(client), attempt(client)
    assert first >= 0.2 and second >= 0.4  # failure_delay 0.2, doubling per failure
    attempt(client)
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.noop()  # the third failure closed the session
    # A new connection from the same address is slowed down further (0.2 * 2**3).
    with smtplib.SMTP("127.0.0.1", tls_server.port, timeout=30) as again:
        again.starttls(context=ctx)
        again.ehlo()
        assert attempt(again) >= 1.6


def _ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "qtoaster test CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=10))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _client_cert(ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, email: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "client"),
            x509.NameAttribute(NameOID.EMAIL_ADDRESS, email),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=10))
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem + cert.public_bytes(serialization.Encoding.PEM)


def test_client_certificate_listed_in_tlsclients_may_relay(home: Path, tmp_path: Path) -> None:
    (home / "tcp.smtp").write_text(":allow\n")  # nobody relays by address
    ca_key, ca = _ca()
    (home / "control" / "clientca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (home / "control" / "tlsclients").write_text("gateway@partner.test\n")
    good, bad = tmp_path / "good.pem", tmp_path / "bad.pem"
    good.write_bytes(_client_cert(ca_key, ca, "gateway@partner.test"))
    bad.write_bytes(_client_cert(ca_key, ca, "stranger@partner.test"))
    srv = Server(home, workers=1)
    try:
        refused = (
            "553 5.7.1 sorry, that domain isn't in my list of allowed rcpthosts; no valid cert"
            " for gatewaying: email address not in my list of tlsclients (#5.7.1)"
        )
        for cert, expected in ((good, "250 "), (bad, refused)):
            result = subprocess.run(
                [OPENSSL, "s_client", "-connect", f"127.0.0.1:{srv.port}", "-starttls", "smtp",
                 "-cert", str(cert), "-quiet"],
                input=b"EHLO client\r\nMAIL FROM:<a@partner.test>\r\nRCPT TO:<x@far.test>\r\n"
                b"QUIT\r\n",
                capture_output=True,
                timeout=30,
            )  # fmt: skip
            lines = result.stdout.decode(errors="replace").splitlines()
            rcpt = [line for line in lines if line.startswith(("250 2.", "553 "))][-2:]
            assert any(line.startswith(expected) for line in rcpt), lines
    finally:
        srv.stop()
