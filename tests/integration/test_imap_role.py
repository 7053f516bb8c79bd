"""The imapd role before login, end to end with real clients: imaplib, openssl s_client.

The server is the real ``qtoaster run`` (as root: every role its own user); what comes
after login is tests/integration/test_imap.py's.
"""

from __future__ import annotations

import base64
import grp
import imaplib
import os
import pwd
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from qtoaster.auth.protocol import SERVICES
from qtoaster.config.settings import RoleUsers

from .harness import Server, make_home, qt, role_child, wait_until

OPENSSL = shutil.which("openssl") or "openssl"
# The auth role learns the "imap" service (and its ticket) on the broker's branch.
needs_imap_service = pytest.mark.skipif(
    "imap" not in SERVICES, reason="the auth role does not know the imap service yet"
)


def _context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    return ctx


@pytest.fixture(scope="module")
def imap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = make_home(tmp_path_factory.mktemp("imap"))
    qt(home, "user", "passwd", "alice@example.test", "--password", "secret")
    srv = Server(home, "--imap", "127.0.0.1:0", "--imaps", "127.0.0.1:0", workers=1)
    yield srv
    srv.stop()


def _lines(sock: socket.socket, until: bytes) -> list[bytes]:
    """Lines read until one starts with ``until``."""
    f = sock.makefile("rb")
    lines = []
    while True:
        line = f.readline()
        assert line, lines
        lines.append(line.rstrip(b"\r\n"))
        if line.startswith(until):
            return lines


def test_greeting_capability_and_logout(imap: Server) -> None:
    with socket.create_connection(("127.0.0.1", imap.ports["imap"]), timeout=30) as sock:
        greeting = _lines(sock, b"* OK")[0]
        assert greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 IMAP4rev2 ")
        assert greeting.endswith(b"] qtoaster ready.")
        caps = greeting.split(b"[CAPABILITY ", 1)[1].split(b"]")[0].split()
        assert {b"STARTTLS", b"LOGINDISABLED", b"SASL-IR", b"ID"} <= set(caps)
        assert b"AUTH=PLAIN" not in caps  # no plain-text login in clear text
        sock.sendall(b"a1 NOOP\r\na2 ID NIL\r\na3 LOGOUT\r\n")
        lines = _lines(sock, b"a3 ")
    assert lines == [
        b"a1 OK NOOP completed",
        b'* ID ("name" "qtoaster")',
        b"a2 OK ID completed",
        b"* BYE Logging out",
        b"a3 OK LOGOUT completed",
    ]


def test_login_refused_in_clear_then_starttls_changes_the_capabilities(imap: Server) -> None:
    client = imaplib.IMAP4("127.0.0.1", imap.ports["imap"], timeout=30)
    assert "LOGINDISABLED" in client.capabilities
    typ, data = client._simple_command("LOGIN", "alice@example.test", "secret")
    assert typ == "NO" and data[0].startswith(b"[PRIVACYREQUIRED]")
    client.starttls(_context())  # asks CAPABILITY again, as RFC 9051 6.2.1 says
    assert "STARTTLS" not in client.capabilities
    assert "LOGINDISABLED" not in client.capabilities
    assert {"AUTH=PLAIN", "AUTH=LOGIN"} <= set(client.capabilities)
    typ, data = client.logout()
    assert typ == "BYE"


def test_starttls_drops_clear_text_pipelined_after_it(imap: Server) -> None:
    """RFC 9051 6.2.1 / CVE-2011-0411: a command sent with STARTTLS never runs."""
    with socket.create_connection(("127.0.0.1", imap.ports["imap"]), timeout=30) as raw:
        _lines(raw, b"* OK")
        raw.sendall(b"s1 STARTTLS\r\ns2 LOGOUT\r\n")
        assert _lines(raw, b"s1 ")[-1] == b"s1 OK Begin TLS negotiation now"
        with _context().wrap_socket(raw) as tls:
            tls.sendall(b"s3 CAPABILITY\r\n")
            lines = _lines(tls, b"s3 ")
    assert lines[-1] == b"s3 OK CAPABILITY completed"
    assert not any(line.startswith(b"s2") or b"BYE" in line for line in lines)


def test_authenticate_mechanisms_in_clear(imap: Server) -> None:
    with socket.create_connection(("127.0.0.1", imap.ports["imap"]), timeout=30) as sock:
        _lines(sock, b"* OK")
        plain = base64.b64encode(b"\0alice@example.test\0secret")
        sock.sendall(b"p1 AUTHENTICATE PLAIN " + plain + b"\r\np2 AUTHENTICATE GSSAPI\r\n")
        lines = _lines(sock, b"p2 ")
    assert lines == [
        b"p1 NO [PRIVACYREQUIRED] Plain text login needs TLS first (STARTTLS)",
        b"p2 NO [CANNOT] Unsupported authentication mechanism",
    ]


def test_imaps_with_openssl_s_client(imap: Server) -> None:
    done = subprocess.run(
        [OPENSSL, "s_client", "-quiet", "-connect", f"127.0.0.1:{imap.ports['imaps']}"],
        input=b"c1 CAPABILITY\r\nc2 LOGOUT\r\n",
        capture_output=True,
        timeout=30,
    )
    out = done.stdout
    assert out.startswith(b"* OK [CAPABILITY IMAP4rev1"), out
    assert b"AUTH=PLAIN" in out and b"STARTTLS" not in out
    assert b"c1 OK CAPABILITY completed" in out and b"c2 OK LOGOUT completed" in out


def test_starttls_with_openssl_s_client(imap: Server) -> None:
    done = subprocess.run(
        [
            OPENSSL,
            "s_client",
            "-quiet",
            "-starttls",
            "imap",
            "-connect",
            f"127.0.0.1:{imap.ports['imap']}",
        ],
        input=b"c1 CAPABILITY\r\nc2 LOGOUT\r\n",
        capture_output=True,
        timeout=30,
    )
    assert b"AUTH=PLAIN" in done.stdout and b"c2 OK LOGOUT completed" in done.stdout, done


def test_sasl_cancel_and_malformed_are_bad(imap: Server) -> None:
    with (
        socket.create_connection(("127.0.0.1", imap.ports["imaps"]), timeout=30) as raw,
        _context().wrap_socket(raw) as sock,
    ):
        _lines(sock, b"* OK")
        sock.sendall(b"x1 AUTHENTICATE PLAIN\r\n")
        assert _lines(sock, b"+")[-1] == b"+ "
        sock.sendall(b"*\r\nx2 AUTHENTICATE LOGIN\r\n")
        assert _lines(sock, b"+ ")[-2:] == [b"x1 BAD Authentication cancelled", b"+ VXNlcm5hbWU6"]
        sock.sendall(b"!!\r\n")
        assert _lines(sock, b"x2 ")[-1] == b"x2 BAD Malformed authentication data"


@needs_imap_service
def test_bad_password_fails_and_counts_in_the_throttle(imap: Server) -> None:
    client = imaplib.IMAP4_SSL("127.0.0.1", imap.ports["imaps"], ssl_context=_context())
    with pytest.raises(imaplib.IMAP4.error, match=r"AUTHENTICATIONFAILED"):
        client.login("alice@example.test", "wrong")
    client.shutdown()
    log = imap.home / "server.log"
    wait_until(lambda: b"login.failed service=imap" in log.read_bytes())
    # The auth role counted it: its log names the failure of this address.
    assert b"client=127.0.0.1" in log.read_bytes()


USERS = RoleUsers()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: roles drop root")
def test_imapd_runs_as_its_user_and_cannot_open_a_maildir(imap: Server) -> None:
    pid = role_child(imap.proc.pid, "imapd")
    status = {
        key: value.split()
        for key, _, value in (
            line.partition(":") for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        )
    }
    entry = pwd.getpwnam(USERS.imapd)
    assert status["Uid"] == [str(entry.pw_uid)] * 4
    groups = {USERS.group, USERS.tls_group, USERS.auth_group, USERS.mailbox_group}
    want = {entry.pw_gid} | {grp.getgrnam(name).gr_gid for name in groups}
    assert {int(g) for g in status["Groups"]} == want
    assert int(status["CapEff"][0], 16) == 0
    maildir = imap.home / "domains" / "example.test" / "alice" / "Maildir"
    gids = ",".join(str(g) for g in sorted(want))
    for argv in (["ls", str(maildir)], ["ls", str(maildir / "new")]):
        denied = subprocess.run(
            [
                "setpriv",
                f"--reuid={entry.pw_uid}",
                f"--regid={entry.pw_gid}",
                f"--groups={gids}",
                *argv,
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert denied.returncode != 0 and "Permission denied" in denied.stderr, argv
