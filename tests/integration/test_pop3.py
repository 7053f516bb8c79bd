"""POP3 end to end with real clients: poplib, fetchmail, curl, openssl s_client."""

from __future__ import annotations

import os
import poplib
import shutil
import signal
import smtplib
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import Server, maildir_files, make_home, qt, wait_until

FETCHMAIL = shutil.which("fetchmail") or "fetchmail"
CURL = shutil.which("curl") or "curl"
OPENSSL = shutil.which("openssl") or "openssl"


def _context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    return ctx


@pytest.fixture
def pop_home(tmp_path: Path) -> Path:
    home = make_home(tmp_path)
    # APOP and CRAM-MD5 are offered only when every account keeps secrets.
    qt(home, "domain", "set", "example.test", "--secrets")
    for user in ("alice", "bob"):
        qt(home, "user", "passwd", f"{user}@example.test", "--password", "secret")
    qt(home, "user", "passwd", "carol@example.test", "--password", "tanstaaf")
    return home


@pytest.fixture
def pop(pop_home: Path) -> Iterator[Server]:
    srv = Server(pop_home, "--pop3", "127.0.0.1:0", "--pop3s", "127.0.0.1:0", workers=1)
    yield srv
    srv.stop()


def send(server: Server, to: str, count: int, body: bytes = b"hello\r\n") -> None:
    before = len(maildir_files(server.home, to))
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
        for n in range(count):
            message = b"Subject: m%d\r\n\r\n" % n + body
            client.sendmail("sender@far.test", [f"{to}@example.test"], message)
    wait_until(lambda: len(maildir_files(server.home, to)) == before + count, what="delivery")


def test_poplib_stls_transaction_and_update(pop: Server) -> None:
    send(pop, "alice", 3, body=b".leading dot\r\nline\r\n")
    client = poplib.POP3("127.0.0.1", pop.ports["pop3"], timeout=30)
    assert client.getwelcome().startswith(b"+OK <")
    assert "USER" not in client.capa()  # no plain-text login before TLS
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        client.user("alice@example.test")
    client.stls(context=_context())
    assert {"TOP", "UIDL", "LAST", "USER"} <= set(client.capa())
    client.user("alice@example.test")
    client.pass_("secret")
    count, size = client.stat()
    assert count == 3
    listing = client.list()[1]
    total = 0
    for line in listing:
        number, octets = line.split()
        _response, lines, got = client.retr(int(number))
        assert got == int(octets)  # LIST size == octets received (CRLF, before stuffing)
        assert b".leading dot" in lines
        total += got
    assert total == size
    assert client.dele(1) == b"+OK "
    assert client.stat() == (2, size - int(listing[0].split()[1]))  # the STAT fix
    with pytest.raises(poplib.error_proto, match="already deleted"):
        client.retr(1)
    assert client.quit() == b"+OK "
    new, cur = (pop.home / "domains/example.test/alice/Maildir" / d for d in ("new", "cur"))
    assert len(os.listdir(new)) == 0
    assert sorted(name.endswith(":2,") for name in os.listdir(cur)) == [True, True]


def test_second_session_gets_in_use_and_lock_survives_kill(pop: Server) -> None:
    first = poplib.POP3_SSL("127.0.0.1", pop.ports["pop3s"], context=_context(), timeout=30)
    first.user("bob@example.test")
    first.pass_("secret")
    second = poplib.POP3_SSL("127.0.0.1", pop.ports["pop3s"], context=_context(), timeout=30)
    second.user("bob@example.test")
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        second.pass_("secret")
    first.close()  # dropped without QUIT: nothing changes, the lock goes
    # kill -9 the whole server while a session holds the lock; a restart must not see it.
    holder = poplib.POP3_SSL("127.0.0.1", pop.ports["pop3s"], context=_context(), timeout=30)
    holder.user("bob@example.test")
    holder.pass_("secret")
    os.killpg(pop.proc.pid, signal.SIGKILL)
    pop.proc.wait(10)
    restarted = Server(pop.home, "--pop3", "127.0.0.1:0", "--pop3s", "127.0.0.1:0", workers=1)
    try:
        again = poplib.POP3_SSL(
            "127.0.0.1", restarted.ports["pop3s"], context=_context(), timeout=30
        )
        again.user("bob@example.test")
        assert again.pass_("secret") == b"+OK "
        again.quit()
    finally:
        restarted.stop()


def test_wrong_passwords_close_the_session(pop: Server) -> None:
    client = poplib.POP3_SSL("127.0.0.1", pop.ports["pop3s"], context=_context(), timeout=30)
    for _ in range(3):  # [auth] max_failures
        client.user("alice@example.test")
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\] authorization failed"):
            client.pass_("wrong")
    with pytest.raises((poplib.error_proto, OSError, EOFError)):
        client.noop()


def _fetchmail(server: Server, tmp_path: Path, *options: str, user: str, password: str) -> Path:
    out = tmp_path / "fetched"
    out.mkdir(exist_ok=True)
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f'poll 127.0.0.1 user "{user}" password "{password}"'
        f" mda \"/bin/sh -c 'cat > {out}/$$.$(date +%%s%%N)'\"\n"
    )
    rc.chmod(0o600)
    result = subprocess.run(
        [FETCHMAIL, "-f", str(rc), "--idfile", str(tmp_path / "ids"), "--nosyslog",
         "--nodetach", "--nosslcertck", "-v", *options],
        capture_output=True,
        timeout=60,
        env={**os.environ, "HOME": str(tmp_path)},
    )  # fmt: skip
    # 0: mail fetched, 1: no mail.
    assert result.returncode in (0, 1), result.stderr.decode(errors="replace")
    return out


def test_fetchmail_stls_keep_and_uidl(pop: Server, tmp_path: Path) -> None:
    send(pop, "alice", 2)
    port = str(pop.ports["pop3"])
    options = ("--port", port, "--protocol", "POP3", "--sslproto", "TLS1.2+", "--keep", "--uidl")
    out = _fetchmail(pop, tmp_path, *options, user="alice@example.test", password="secret")
    assert len(os.listdir(out)) == 2
    # --keep: still on the server; --uidl: the second run fetches nothing new.
    _fetchmail(pop, tmp_path, *options, user="alice@example.test", password="secret")
    assert len(os.listdir(out)) == 2
    assert (
        len(maildir_files(pop.home, "alice"))
        + len(os.listdir(pop.home / "domains/example.test/alice/Maildir/cur"))
        == 2
    )


def test_fetchmail_apop_and_cram_md5(pop: Server, tmp_path: Path) -> None:
    send(pop, "carol", 2)
    port = str(pop.ports["pop3"])
    first = tmp_path / "apop"
    first.mkdir()
    out = _fetchmail(
        pop, first, "--port", port, "--protocol", "APOP", "--keep",
        user="carol@example.test", password="tanstaaf",
    )  # fmt: skip
    assert len(os.listdir(out)) == 2
    second = tmp_path / "cram"
    second.mkdir()
    out = _fetchmail(
        pop, second, "--port", port, "--protocol", "POP3", "--auth", "cram-md5",
        user="carol@example.test", password="tanstaaf",
    )  # fmt: skip
    assert len(os.listdir(out)) == 2  # and deleted from the server this time
    assert maildir_files(pop.home, "carol") == []


def test_fetchmail_pop3s(pop: Server, tmp_path: Path) -> None:
    send(pop, "bob", 1)
    out = _fetchmail(
        pop, tmp_path, "--port", str(pop.ports["pop3s"]), "--protocol", "POP3", "--ssl",
        "--sslproto", "TLS1.2+", user="bob@example.test", password="secret",
    )  # fmt: skip
    assert len(os.listdir(out)) == 1


def test_curl_pop3s_list_and_retr(pop: Server) -> None:
    send(pop, "bob", 2, body=b"curl body\r\n")
    base = f"pop3s://127.0.0.1:{pop.ports['pop3s']}/"
    common = [CURL, "-s", "-k", "--user", "bob@example.test:secret", "--max-time", "30"]
    done = subprocess.run([*common, "-v", base], capture_output=True, timeout=60)
    listing = done.stdout
    assert listing, done.stderr.decode(errors="replace")[-600:]
    assert listing.splitlines()[0].startswith(b"1 ")
    message = subprocess.run([*common, base + "2"], capture_output=True, timeout=60).stdout
    assert b"curl body" in message
    # Plain pop3:// with STARTTLS required (--ssl-reqd).
    plain = f"pop3://127.0.0.1:{pop.ports['pop3']}/"
    listing = subprocess.run([*common, "--ssl-reqd", plain], capture_output=True, timeout=60).stdout
    assert len(listing.splitlines()) == 2


def test_openssl_starttls_pop3_and_injection(pop: Server) -> None:
    result = subprocess.run(
        [OPENSSL, "s_client", "-connect", f"127.0.0.1:{pop.ports['pop3']}", "-starttls",
         "pop3", "-quiet"],
        input=b"CAPA\r\nQUIT\r\n",
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    text = result.stdout.decode(errors="replace")
    assert "+OK Capability list follows" in text and "USER" in text
    import socket

    sock = socket.create_connection(("127.0.0.1", pop.ports["pop3"]), timeout=30)
    f = sock.makefile("rb")
    f.readline()
    sock.sendall(b"STLS\r\nUSER alice@example.test\r\n")  # injected USER
    assert f.readline().startswith(b"+OK")
    tls = _context().wrap_socket(sock, server_hostname="mx.example.test")
    g = tls.makefile("rb")
    tls.sendall(b"PASS secret\r\n")
    assert g.readline() == b"-ERR USER first\r\n"  # the injected USER never counted
    tls.close()


def test_pop_disabled_account_cannot_log_in(pop: Server) -> None:
    qt(pop.home, "user", "set", "bob@example.test", "--no-pop")
    client = poplib.POP3_SSL("127.0.0.1", pop.ports["pop3s"], context=_context(), timeout=30)
    client.user("bob@example.test")
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\] authorization failed"):
        client.pass_("secret")
    client.close()
