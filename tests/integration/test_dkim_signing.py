"""DKIM signing end to end (issue 14): a started server signs what our users send to a
remote domain (AUTH, RELAYCLIENT), not what an untrusted client sends, and the peer's copy
verifies with dkimpy; under root the keys are the send role's alone."""

from __future__ import annotations

import os
import signal
import smtplib
from collections.abc import Iterator
from pathlib import Path

import dkim
import pytest
from tests.smtppeer import SmtpPeer

from qtoaster.mailauth import dkimkeys

from .harness import Server, make_home, qt, wait_until
from .test_privileges import _as_role

UNTRUSTED = "127.0.0.2"


def _message(subject: str) -> str:
    return (
        "From: Alice <alice@example.test>\r\n"
        "To: x@far.test\r\n"
        f"Subject: {subject}\r\n"
        "Date: Mon, 7 Dec 2026 03:00:00 +0000\r\n"
        f"Message-ID: <{subject}@example.test>\r\n"
        "\r\n"
        "Hello,   world.  \r\n"
        "\r\n"
    )


@pytest.fixture(scope="module")
def signed_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, SmtpPeer]]:
    home = make_home(tmp_path_factory.mktemp("dkim"))
    settings = home / "qtoaster.toml"
    settings.write_text(
        settings.read_text().replace("allow_plaintext = false", "allow_plaintext = true")
    )
    # Only 127.0.0.1 relays; 127.0.0.2 is any client of port 25 (it may send to far.test
    # because far.test is in rcpthosts, as a backup MX's domain would be).
    (home / "tcp.smtp").write_text('127.0.0.1:allow,RELAYCLIENT=""\n:allow\n')
    with open(home / "control" / "rcpthosts", "a") as rcpthosts:
        rcpthosts.write("far.test\n")
    out = qt(home, "dkim", "keygen", "example.test").stdout.decode()
    assert out.count("pending") == 2, out
    store = home / "dkim"
    for key in dkimkeys.load_keys(store, "example.test"):
        dkimkeys.set_state(store, key, "active")
    with SmtpPeer("127.0.0.1") as peer:
        (home / "control" / "smtproutes").write_text(f"far.test:127.0.0.1:{peer.port}\n")
        server = Server(home)
        try:
            with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
                client.sendmail("alice@example.test", ["x@far.test"], _message("relayclient"))
            with smtplib.SMTP(
                "127.0.0.1", server.port, timeout=30, source_address=(UNTRUSTED, 0)
            ) as client:
                client.login("alice@example.test", "secret")
                client.sendmail("alice@example.test", ["x@far.test"], _message("authenticated"))
            with smtplib.SMTP(
                "127.0.0.1", server.port, timeout=30, source_address=(UNTRUSTED, 0)
            ) as client:
                client.sendmail("alice@example.test", ["x@far.test"], _message("untrusted"))
            peer.wait_for(3, timeout=30)
        finally:
            server.stop()
        yield home, peer


def _received(peer: SmtpPeer, subject: str) -> bytes:
    (data,) = [m.data for m in peer.messages if f"Subject: {subject}".encode() in m.data]
    return data


def _verdicts(home: Path, data: bytes) -> list[bool]:
    records = {
        f"{k.record_name()}.".encode(): k.txt().encode()
        for k in dkimkeys.load_keys(home / "dkim", "example.test")
    }
    d = dkim.DKIM(data)
    count = sum(1 for name, _ in d.headers if name.lower() == b"dkim-signature")
    return [
        bool(d.verify(idx=i, dnsfunc=lambda n, timeout=5: records.get(n))) for i in range(count)
    ]


def test_our_users_mail_is_signed_and_verifies(signed_home: tuple[Path, SmtpPeer]) -> None:
    home, peer = signed_home
    for subject in ("relayclient", "authenticated"):
        data = _received(peer, subject)
        assert data.startswith(b"DKIM-Signature: v=1; a=rsa-sha256;"), data[:200]
        assert b"\r\nDKIM-Signature: v=1; a=ed25519-sha256;" in data
        assert _verdicts(home, data) == [True, True], subject
    log = (home / "server.log").read_text()
    assert "dkim signing for example.test (" in log
    assert log.count(" d=example.test s=") == 2


def test_untrusted_client_is_not_signed(signed_home: tuple[Path, SmtpPeer]) -> None:
    _, peer = signed_home
    assert b"DKIM-Signature" not in _received(peer, "untrusted")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: roles drop root")
def test_keys_are_the_send_roles_alone(signed_home: tuple[Path, SmtpPeer]) -> None:
    home, _ = signed_home
    (key, *_) = dkimkeys.load_keys(home / "dkim", "example.test")
    path = str(home / "dkim" / "example.test" / f"{key.selector}.pem")
    assert _as_role("send", "head", "-c0", path).returncode == 0
    for role in ("smtpd", "pop3d", "remote", "auth"):
        denied = _as_role(role, "head", "-c0", path)
        assert denied.returncode != 0 and "Permission denied" in denied.stderr, role
    # keygen as root leaves the files with the send role's user (ownership.py's table).
    qt(home, "dkim", "keygen", "example.test", "--algorithm", "ed25519", "--selector", "more")
    made = home / "dkim" / "example.test" / "more.pem"
    assert made.stat().st_uid == (home / "queue").stat().st_uid
    assert made.stat().st_mode & 0o777 == 0o600
    assert qt(home, "config", "check", check=False).returncode == 0


def test_keys_are_read_again_after_sighup(signed_home: tuple[Path, SmtpPeer]) -> None:
    home, _ = signed_home
    store = home / "dkim"
    (rsa,) = [k for k in dkimkeys.load_keys(store, "example.test") if k.algorithm == "rsa-sha256"]
    log = home / "server.log"
    with SmtpPeer("127.0.0.1") as peer:
        (home / "control" / "smtproutes").write_text(f"far.test:127.0.0.1:{peer.port}\n")
        server = Server(home)
        try:
            starts = log.read_text().count("dkim signing for example.test (")
            out = qt(home, "dkim", "delete", "example.test", rsa.selector).stdout.decode()
            assert "note: the send role uses the new keys after its next start" in out
            server.signal(signal.SIGHUP)
            wait_until(
                lambda: log.read_text().count("dkim signing for example.test (") > starts,
                30,
                "send restarted with the keys read again",
            )
            with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
                client.sendmail("alice@example.test", ["x@far.test"], _message("reloaded"))
            (received,) = peer.wait_for(1, timeout=30)
        finally:
            server.stop()
    assert received.data.count(b"DKIM-Signature:") == 1
    assert received.data.startswith(b"DKIM-Signature: v=1; a=ed25519-sha256;")
    assert _verdicts(home, received.data) == [True]
