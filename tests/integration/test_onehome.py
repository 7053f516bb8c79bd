"""One server per home, listeners no other program shares, certificates checked (issue 13)."""

from __future__ import annotations

import datetime as dt
import errno
import os
import signal
import smtplib
import socket
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .harness import QTOASTER, Server, make_home, qt


def _run(home: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*QTOASTER, "run", "--home", str(home), "--workers", "1", *args],
        capture_output=True,
        timeout=60,
    )


def _greets(port: int) -> bool:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        return client.noop()[0] == 250


def test_second_run_on_a_home_is_refused(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    server = Server(home)
    try:
        second = _run(home, "--smtp", "127.0.0.1:0")
        assert second.returncode != 0
        err = second.stderr.decode()
        assert f"qtoaster run is already running on {home} (pid {server.proc.pid})" in err
        # A queue manager of its own is refused too: two on one queue must never run.
        send = subprocess.run(
            [*QTOASTER, "serve", "send", "--home", str(home)], capture_output=True, timeout=60
        )
        assert send.returncode != 0
        assert f"the queue manager is already running on {home}" in send.stderr.decode()
        assert _greets(server.port)
    finally:
        server.stop()


def test_lock_does_not_survive_kill_9(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    Server(home).kill9()
    Server(home).stop()


def test_port_held_by_another_program(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    other = socket.socket()
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    other.bind(("127.0.0.1", 0))
    other.listen(5)
    port = other.getsockname()[1]
    with other:
        result = _run(home, "--smtp", f"127.0.0.1:{port}")
        assert result.returncode != 0
        assert (
            f"qtoaster: cannot listen on 127.0.0.1:{port}: address already in use (another server?)"
        ) in result.stderr.decode()
        assert b"qtoaster ready" not in result.stdout
        # The other program keeps its port and its connections.
        client = socket.create_connection(("127.0.0.1", port), timeout=10)
        conn, _ = other.accept()
        conn.close()
        client.close()
    # Nothing was left running: the home is free for a server.
    Server(home).stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="as a user, SO_REUSEPORT of the same uid can join")
def test_another_program_cannot_take_our_port(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    server = Server(home)
    try:
        for options in ((), (socket.SO_REUSEADDR,), (socket.SO_REUSEPORT, socket.SO_REUSEADDR)):
            thief = socket.socket()
            for option in options:
                thief.setsockopt(socket.SOL_SOCKET, option, 1)
            with thief, pytest.raises(OSError) as caught:
                thief.bind(("127.0.0.1", server.port))
                thief.listen(5)
            assert caught.value.errno == errno.EADDRINUSE
        assert _greets(server.port)
    finally:
        server.stop()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may bind ports below 1024")
def test_low_port_as_a_user(tmp_path: Path) -> None:
    result = _run(make_home(tmp_path), "--smtp", "127.0.0.1:25")
    assert result.returncode != 0
    assert "cannot listen on 127.0.0.1:25: permission denied" in result.stderr.decode()


def _cert(key: ec.EllipticCurvePrivateKey, days: int) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mx.example.test")])
    now = dt.datetime.now(dt.UTC)
    end = now + dt.timedelta(days=days)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(min(now, end) - dt.timedelta(days=30))
        .not_valid_after(end)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _bad_certificates() -> dict[str, tuple[bytes | None, str]]:
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    return {
        "expired": (_key_pem(key) + _cert(key, -1), "certificate expired on "),
        "mismatched key": (
            _key_pem(other) + _cert(key, 90),
            "the private key does not match the certificate",
        ),
        "garbage": (b"this is not a certificate\n", "not PEM"),
        "no key": (_cert(key, 90), "no private key in it"),
        "missing": (None, "missing"),
    }


@pytest.mark.parametrize("case", list(_bad_certificates()))
def test_bad_certificate_fails_check_and_run(tmp_path: Path, case: str) -> None:
    home = make_home(tmp_path)
    path = home / "control" / "servercert.pem"
    data, problem = _bad_certificates()[case]
    if data is None:
        path.unlink()
    else:
        path.write_bytes(data)
    check = qt(home, "config", "check", check=False)
    assert check.returncode == 1
    assert f"{path}: {problem}" in check.stdout.decode()
    result = _run(home, "--smtp", "127.0.0.1:0")
    assert result.returncode != 0
    err = result.stderr.decode()
    assert f"qtoaster: {path}: {problem}" in err and "not starting" in err
    assert b"qtoaster ready" not in result.stdout


def test_unreadable_certificate(tmp_path: Path) -> None:
    # Root reads a mode 000 file, so as root the file is made unreadable another way:
    # servercert.pem is a directory (read fails with EISDIR). As a user, chmod 000.
    home = make_home(tmp_path)
    path = home / "control" / "servercert.pem"
    if os.geteuid() == 0:
        path.unlink()
        path.mkdir()
        reason = "cannot read it: Is a directory"
    else:
        path.chmod(0)
        reason = "cannot read it: Permission denied"
    check = qt(home, "config", "check", check=False)
    assert check.returncode == 1
    assert f"{path}: {reason}" in check.stdout.decode()


def test_certificate_expiring_soon_is_a_warning(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    key = ec.generate_private_key(ec.SECP256R1())
    path = home / "control" / "servercert.pem"
    path.write_bytes(_key_pem(key) + _cert(key, 5))
    check = qt(home, "config", "check", check=False)
    assert check.returncode == 0, check.stdout
    assert f"warning: {path}: certificate expires in 4 days" in check.stderr.decode()
    server = Server(home)
    try:
        server.signal(signal.SIGHUP)
        assert _greets(server.port)
    finally:
        server.stop()
