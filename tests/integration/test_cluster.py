"""Two qtoaster hosts on one PostgreSQL directory (docs/cluster.md), as two homes on one
machine: host A on 127.0.0.2, host B on 127.0.0.3, each with its own queue, run/ and
control/, both homes' ``domains/`` the same directory (the shared mailbox store; a
symbolic link here, an NFS or cluster file system mount in production).

Shown: a user added on A is known to B within a second (B's SMTP accepts RCPT, B's POP3
login works); both accept and deliver into the shared Maildirs; the login throttle counts
failures made on either host."""

from __future__ import annotations

import poplib
import shutil
import smtplib
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from .harness import Server, configure, make_home, qt, wait_until

# Over 20 s on a loaded machine: PostgreSQL, two homes (a dozen CLI runs), two servers.
pytestmark = pytest.mark.slow

HOST_A, HOST_B = "127.0.0.2", "127.0.0.3"
SEEN_WITHIN = 1.0  # seconds from `user add` on A to B knowing the user
DOMAIN = "example.test"


@dataclass
class Cluster:
    a: Server
    b: Server
    url: str
    shared: Path  # the shared mailbox store (host A's domains/)


class Pop3From(poplib.POP3):
    """poplib from a chosen source address (the throttle counts per client address)."""

    def __init__(self, host: str, port: int, source: str) -> None:
        self._source = source
        super().__init__(host, port, timeout=30)

    def _create_socket(self, timeout: float) -> socket.socket:
        return socket.create_connection(
            (self.host, self.port), timeout, source_address=(self._source, 0)
        )


def _context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    return ctx


def pop3_login(host: str, port: int, user: str, password: str, source: str) -> int:
    """Log in over STLS; the message count. poplib.error_proto on a refused login."""
    client = Pop3From(host, port, source)
    try:
        client.stls(context=_context())
        client.user(user)
        client.pass_(password)
        count, _size = client.stat()
        return count
    finally:
        client.close()


def rcpt(host: str, port: int, to: str) -> int:
    with smtplib.SMTP(host, port, timeout=30) as client:
        client.ehlo("client.example")
        client.mail("sender@far.test")
        code, _text = client.rcpt(to)
        return code


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, postgres_server: object) -> Iterator[Cluster]:
    from tests.pgserver import PgServer

    assert isinstance(postgres_server, PgServer)
    name = postgres_server.create_database()
    url = postgres_server.url(name)
    root = tmp_path_factory.mktemp("cluster")
    home_a = make_home(root / "a", me="mx-a.example.test", database_url=url, smtp=f"{HOST_A}:0")
    home_b = root / "b" / "home"
    configure(home_b, me="mx-b.example.test", database_url=url, smtp=f"{HOST_B}:0")
    # What must agree (docs/cluster.md): rcpthosts (written by `domain add` on A) and the
    # SRS key are copied; the mailbox store is shared.
    shutil.copy2(home_a / "control" / "rcpthosts", home_b / "control" / "rcpthosts")
    shutil.copy2(home_a / "secrets" / "srs.key", home_b / "secrets" / "srs.key")
    shutil.rmtree(home_b / "domains")
    (home_b / "domains").symlink_to(home_a / "domains")
    a = Server(home_a, "--pop3", f"{HOST_A}:0", workers=1)
    try:
        b = Server(home_b, "--pop3", f"{HOST_B}:0", workers=1)
    except BaseException:
        a.stop()
        raise
    yield Cluster(a, b, url, home_a / "domains")
    b.stop()
    a.stop()
    postgres_server.drop_database(name)


def test_user_added_on_one_host_is_known_to_the_other_within_a_second(cluster: Cluster) -> None:
    b = cluster.b
    # B has looked dave up and cached "no such user" (chkuser's cache, directory/cache.py).
    assert rcpt(HOST_B, b.port, f"dave@{DOMAIN}") == 550
    qt(cluster.a.home, "user", "add", f"dave@{DOMAIN}", "--password", "pw-dave")
    added = time.monotonic()
    while rcpt(HOST_B, b.port, f"dave@{DOMAIN}") != 250:
        assert time.monotonic() - added < SEEN_WITHIN, "B's SMTP did not learn of dave in time"
    while True:
        try:
            pop3_login(HOST_B, b.ports["pop3"], f"dave@{DOMAIN}", "pw-dave", "127.0.0.1")
            break
        except poplib.error_proto:
            assert time.monotonic() - added < SEEN_WITHIN, "B's POP3 refused dave too long"
    assert time.monotonic() - added < SEEN_WITHIN


def test_both_hosts_accept_and_deliver_into_the_shared_store(cluster: Cluster) -> None:
    new = cluster.shared / DOMAIN / "alice" / "Maildir" / "new"
    before = len(list(new.iterdir()))
    for host, server in ((HOST_A, cluster.a), (HOST_B, cluster.b)):
        with smtplib.SMTP(host, server.port, timeout=30) as client:
            client.sendmail(
                "sender@far.test", [f"alice@{DOMAIN}"], f"Subject: via {host}\r\n\r\nhi\r\n"
            )
    wait_until(lambda: len(list(new.iterdir())) == before + 2, what="both deliveries")
    subjects = {p.read_bytes().split(b"Subject: ", 1)[1].split(b"\r")[0] for p in new.iterdir()}
    assert {b"via 127.0.0.2", b"via 127.0.0.3"} <= {s.split(b"\n")[0] for s in subjects}
    # Each host names its files after its own control/me (maildir(5)'s unique names, and
    # what tmp/ cleaning uses to tell its own killed deliveries): they must differ.
    names = [p.name for p in new.iterdir()]
    for me in ("mx-a.example.test", "mx-b.example.test"):
        assert any(name.split(",S=")[0].endswith("." + me) for name in names)
    # Each host's own queue took its message; neither saw the other's.
    for server in (cluster.a, cluster.b):
        assert (server.home / "queue").is_dir() and not (server.home / "queue").is_symlink()
    # Either host's POP3 serves both messages.
    for host, server in ((HOST_A, cluster.a), (HOST_B, cluster.b)):
        count = pop3_login(host, server.ports["pop3"], f"alice@{DOMAIN}", "secret", "127.0.0.1")
        assert count == before + 2


def test_login_throttle_counts_failures_made_on_either_host(cluster: Cluster) -> None:
    account = f"carol@{DOMAIN}"
    # Three failures on A from 127.0.0.5 (failure_delay 0.1 s: 0.1, 0.2, 0.4 s).
    for _ in range(3):
        with pytest.raises(poplib.error_proto):
            pop3_login(HOST_A, cluster.a.ports["pop3"], account, "wrong", "127.0.0.5")
    with psycopg.connect(cluster.url) as conn:
        row = conn.execute(
            "SELECT failures FROM login_failures WHERE kind = 'account' AND key = %s", [account]
        ).fetchone()
    assert row == (3,)
    # On B, from an address that never failed, a guess at the same account waits for the
    # account's fourth failure: 0.1 * 2**3 = 0.8 s (it would be 0.1 s counted on B alone).
    started = time.monotonic()
    with pytest.raises(poplib.error_proto):
        pop3_login(HOST_B, cluster.b.ports["pop3"], account, "wrong", "127.0.0.6")
    assert time.monotonic() - started >= 0.75
    # The address that failed on A is slowed on B too, even for another account: its
    # fourth failure waits 0.8 s.
    started = time.monotonic()
    with pytest.raises(poplib.error_proto):
        pop3_login(HOST_B, cluster.b.ports["pop3"], f"bob@{DOMAIN}", "wrong", "127.0.0.5")
    assert time.monotonic() - started >= 0.75
    # The owner, from a clean address, logs in at once on either host; the success forgets
    # the account's failures everywhere.
    assert pop3_login(HOST_A, cluster.a.ports["pop3"], account, "secret", "127.0.0.7") >= 0
    with psycopg.connect(cluster.url) as conn:
        rows = conn.execute(
            "SELECT count(*) FROM login_failures WHERE kind = 'account' AND key = %s", [account]
        ).fetchone()
    assert rows == (0,)
