"""SRS through the real server (as root: privilege-separated roles, docs/srs.md): a
forward leaves with an SRS sender, a bounce to it reaches the original sender, a forged
SRS address is refused at RCPT; the key is the auth role's alone."""

from __future__ import annotations

import os
import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.smtppeer import SmtpPeer

from .harness import Server, dialog, make_home, qt, wait_until

BODY = b"From: dave@sender.test\r\nSubject: forward me\r\n\r\nhello\r\n"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Server, SmtpPeer]]:
    peer = SmtpPeer("127.0.0.1").start()
    home = make_home(tmp_path_factory.mktemp("srs"))
    # Both the forward's target and the original sender's domain are the peer.
    routes = f"remote.test:127.0.0.1:{peer.port}\nsender.test:127.0.0.1:{peer.port}\n"
    (home / "control" / "smtproutes").write_text(routes)
    qt(home, "alias", "add", "fwd@example.test", "friend@remote.test")
    server = Server(home)
    try:
        yield home, server, peer
    finally:
        server.stop()
        peer.stop()


def test_forward_bounce_and_forgery(setup: tuple[Path, Server, SmtpPeer]) -> None:
    home, server, peer = setup
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
        client.sendmail("dave@sender.test", ["fwd@example.test"], BODY)
    [forwarded] = peer.wait_for(1, 30)
    assert forwarded.recipients == ("friend@remote.test",)
    srs = forwarded.sender
    assert srs.startswith("SRS0=") and srs.endswith("=sender.test=dave@example.test"), srs

    # The peer's bounce comes back to the SRS address from port 25 and goes on to dave.
    replies = dialog(
        server.port,
        [b"HELO peer.test", b"MAIL FROM:<>", f"RCPT TO:<{srs}>".encode(), b"DATA"],
    )
    assert replies[2].startswith(b"250") and replies[3].startswith(b"250"), replies
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
        client.sendmail("", [srs], b"Subject: failure notice\r\n\r\nbounced\r\n")
    [_, bounce] = peer.wait_for(2, 30)
    assert (bounce.sender, bounce.recipients) == ("", ("dave@sender.test",))
    assert f"Delivered-To: {srs}".encode() in bounce.data

    # Forged and malformed SRS addresses are refused at RCPT.
    forged = "SRS0=AAAA" + srs[9:]
    for address in (forged, "SRS0=junk@example.test"):
        replies = dialog(
            server.port, [b"HELO peer.test", b"MAIL FROM:<>", f"RCPT TO:<{address}>".encode()]
        )
        assert replies[3] == b"550 sorry, invalid SRS address (#5.1.1)", replies
    log = home / "server.log"
    wait_until(lambda: "reason=srs" in log.read_text(errors="replace"), 10, "the srs refusal")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: roles drop root")
def test_only_the_auth_role_reads_the_srs_key(setup: tuple[Path, Server, SmtpPeer]) -> None:
    from .test_privileges import _as_role

    home, _, _ = setup
    key = str(home / "secrets" / "srs.key")
    assert _as_role("auth", "head", "-c0", key).returncode == 0
    for role in ("smtpd", "pop3d", "send", "remote", "mailbox"):
        denied = _as_role(role, "head", "-c0", key)
        assert denied.returncode != 0 and "Permission denied" in denied.stderr, role
    assert oct(os.stat(key).st_mode & 0o777) == "0o600"
