"""Remote delivery end to end (issue 6): a real DNS server (dnsmasq) on loopback serving
test zones, SMTP peers on 127.0.0.x, and a second qtoaster instance as a real MX.

Instance A (the one under test) relays for 127.0.0.1; its [dns] nameservers point at
the test DNS and its [remote] port at the port every peer listens on (each peer has its
own loopback address, so they can share one port).  Nothing sleeps: every wait polls a
log, a Maildir or a peer with a deadline.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.dnsserver import DnsServer, Zone
from tests.smtppeer import PeerBehaviour, SmtpPeer
from tests.tls.pki import PrivateCA

from .harness import DEAD_DNS, Server, make_home, qt, wait_for_mail, wait_until

B_ADDRESS = "127.0.0.20"
PEERS = {  # name -> (address, behaviour)
    "greet421": ("127.0.0.21", PeerBehaviour(greeting="421 busy, come back later")),
    "greet554": ("127.0.0.22", PeerBehaviour(greeting="554 no mail here")),
    "good": ("127.0.0.23", PeerBehaviour()),
    "picky": (
        "127.0.0.24",
        PeerBehaviour(
            rcpt_replies={
                "bad@picky.test": "550 5.1.1 no such user",
                "later@picky.test": "450 4.2.1 mailbox busy",
            }
        ),
    ),
    "tls": ("127.0.0.25", PeerBehaviour()),
    "drop": ("127.0.0.26", PeerBehaviour(drop_mid_data=True)),
    "badtls": ("127.0.0.28", PeerBehaviour()),
    "sevenbit": ("127.0.0.29", PeerBehaviour(extensions=("PIPELINING",))),
}
DEAD_ADDRESS = "127.0.0.27"  # nothing listens there
OUTGOING = "127.0.0.30"  # instance A's control/outgoingip


def zone() -> Zone:
    mx = [
        ("b.test", 10, "mx.b.test"),
        ("multi.test", 10, "mx1.multi.test"),
        ("multi.test", 20, "mx2.multi.test"),
        ("multi.test", 30, "mx3.multi.test"),
        ("picky.test", 10, "mx.picky.test"),
        ("tls.test", 10, "mx.tls.test"),
        ("drop.test", 10, "mx.drop.test"),
        ("dead.test", 10, "mx.dead.test"),
        ("badtls.test", 10, "mx.badtls.test"),
        ("sevenbit.test", 10, "mx.sevenbit.test"),
        ("nullmx.test", 0, "."),
    ]
    hosts = [
        ("mx.b.test", B_ADDRESS),
        ("mx1.multi.test", PEERS["greet421"][0]),
        ("mx2.multi.test", PEERS["greet554"][0]),
        ("mx3.multi.test", PEERS["good"][0]),
        ("mx.picky.test", PEERS["picky"][0]),
        ("mx.tls.test", PEERS["tls"][0]),
        ("mx.drop.test", PEERS["drop"][0]),
        ("mx.dead.test", DEAD_ADDRESS),
        ("mx.badtls.test", PEERS["badtls"][0]),
        ("mx.sevenbit.test", PEERS["sevenbit"][0]),
        ("implicit.test", PEERS["good"][0]),  # no MX: the A record is the implicit MX
    ]
    return Zone(domains=("test",), mx=mx, hosts=hosts)


@pytest.fixture(scope="module")
def ca() -> PrivateCA:
    return PrivateCA()


@pytest.fixture(scope="module")
def dns() -> Iterator[str]:
    server = DnsServer(zone())
    try:
        yield server.start()
    finally:
        server.stop()


def _server_context(ca: PrivateCA, name: str, tmp: Path, request_cert: bool) -> ssl.SSLContext:
    _, pem = ca.issue(name, dns=[name])
    path = tmp / f"{name}.pem"
    path.write_bytes(pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(path)
    if request_cert:
        (tmp / "ca.pem").write_bytes(ca.cert_pem)
        context.load_verify_locations(tmp / "ca.pem")
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


@pytest.fixture(scope="module")
def peers(ca: PrivateCA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, SmtpPeer]]:
    tmp = tmp_path_factory.mktemp("peers")
    PEERS["tls"][1].tls = _server_context(ca, "mx.tls.test", tmp, request_cert=True)
    PEERS["badtls"][1].tls = _server_context(PrivateCA("another CA"), "mx.badtls.test", tmp, False)
    started: dict[str, SmtpPeer] = {}
    port = 0
    try:
        for name, (address, behaviour) in PEERS.items():
            started[name] = SmtpPeer(address, port, behaviour).start()
            port = started[name].port  # every peer on the same port, own address
        yield started
    finally:
        for peer in started.values():
            peer.stop()


def _configure(home: Path, dns: str, port: int, lifetime: int | None = None) -> None:
    settings = home / "qtoaster.toml"
    text = settings.read_text()
    text = text.replace(f'nameservers = ["{DEAD_DNS}"]', f'nameservers = ["{dns}"]')
    text = text.replace("port = 25", f"port = {port}")
    settings.write_text(text)
    control = home / "control"
    (control / "timeoutconnect").write_text("2\n")
    (control / "smtproutes").write_text("routed.test:mx3.multi.test\n")
    if lifetime is not None:
        (control / "queuelifetime").write_text(f"{lifetime}\n")


@pytest.fixture(scope="module")
def instance_b(
    tmp_path_factory: pytest.TempPathFactory, peers: dict[str, SmtpPeer]
) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("b") / "home"
    qt(home, "init", "--me", "mx.b.test", "--smtp", f"{B_ADDRESS}:{peers['good'].port}")
    qt(home, "domain", "add", "b.test")
    qt(home, "user", "add", "dora@b.test", "--password", "secret")
    server = Server(home)
    yield home
    server.stop()


@pytest.fixture(scope="module")
def instance_a(
    tmp_path_factory: pytest.TempPathFactory,
    dns: str,
    peers: dict[str, SmtpPeer],
    ca: PrivateCA,
) -> Iterator[tuple[Path, Server]]:
    home = make_home(tmp_path_factory.mktemp("a"))
    _configure(home, dns, peers["good"].port)
    tlshosts = home / "control" / "tlshosts"
    tlshosts.mkdir()
    for host in ("mx.tls.test", "mx.badtls.test"):
        (tlshosts / f"{host}.pem").write_bytes(ca.cert_pem)
    _, client_pem = ca.issue("mx.example.test", dns=["mx.example.test"])
    (home / "control" / "clientcert.pem").write_bytes(client_pem)
    (home / "control" / "outgoingip").write_text(f"{OUTGOING}\n")
    server = Server(home)
    yield home, server
    server.stop()


def send(
    port: int, rcpts: list[str], body: bytes = b"", sender: str = "alice@example.test"
) -> None:
    message = b"From: alice@example.test\r\nSubject: remote test\r\n\r\n" + (body or b"hello\r\n")
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.sendmail(sender, rcpts, message)


def log_has(home: Path, needle: str, timeout: float = 20.0) -> None:
    log = home / "server.log"
    wait_until(lambda: needle in log.read_text(errors="replace"), timeout, what=needle)


def test_mail_arrives_in_the_maildir_of_a_second_instance(
    instance_a: tuple[Path, Server], instance_b: Path
) -> None:
    _home, server = instance_a
    send(server.port, ["dora@b.test"], b"to the other side\r\n")
    new = instance_b / "domains" / "b.test" / "dora" / "Maildir" / "new"
    wait_until(lambda: new.is_dir() and any(new.iterdir()), 30, "mail in B's Maildir")
    data = next(new.iterdir()).read_bytes()
    assert b"to the other side" in data
    assert f"({OUTGOING})".encode() in data  # control/outgoingip: B saw A's source address
    assert b"Return-Path: <alice@example.test>" in data


def test_mx_greeting_421_and_554_are_skipped(
    instance_a: tuple[Path, Server], peers: dict[str, SmtpPeer]
) -> None:
    _, server = instance_a
    before = len(peers["good"].messages)
    send(server.port, ["someone@multi.test"])
    got = peers["good"].wait_for(before + 1, 30)[-1]
    assert got.recipients == ("someone@multi.test",) and got.sender == "alice@example.test"
    for name in ("greet421", "greet554"):
        assert peers[name].connections >= 1 and peers[name].messages == []
        assert not any(line.upper().startswith("MAIL") for line in peers[name].transcript)


def test_per_recipient_results_bounce_and_defer(
    instance_a: tuple[Path, Server], peers: dict[str, SmtpPeer]
) -> None:
    home, server = instance_a
    send(server.port, ["ok@picky.test", "bad@picky.test", "later@picky.test"])
    got = peers["picky"].wait_for(1, 30)[0]
    assert got.recipients == ("ok@picky.test",)  # one connection, one message
    log_has(home, "to=later@picky.test channel=remote result=deferral")
    qid = _queued_id(home, "later@picky.test")
    # Let the 450 recipient through and ask for a retry now (qmail-send's SIGALRM).
    del peers["picky"].behaviour.rcpt_replies["later@picky.test"]
    qt(home, "queue", "retry", qid)
    assert peers["picky"].wait_for(2, 30)[1].recipients == ("later@picky.test",)
    bounce = wait_for_mail(home, "alice", b"<bad@picky.test>:")
    assert (
        b"<bad@picky.test>:\n127.0.0.24 does not like recipient.\n"
        b"Remote host said: 550 5.1.1 no such user\n" in bounce
    )
    assert b"ok@picky.test>:" not in bounce and b"later@picky.test>:" not in bounce
    wait_until(lambda: not _queued(home), 30, "queue empty")


def _queued(home: Path) -> str:
    return qt(home, "queue", "list").stdout.decode()


def _queued_id(home: Path, rcpt: str) -> str:
    listing = _queued(home)
    current = ""
    for line in listing.splitlines():
        if "  msg " in line:
            current = line.split("  msg ", 1)[1].split(":", 1)[0]
        elif rcpt in line:
            return current
    raise AssertionError(f"{rcpt} not queued:\n{listing}")


def test_tlshosts_verified_tls_and_client_certificate(
    instance_a: tuple[Path, Server], peers: dict[str, SmtpPeer]
) -> None:
    home, server = instance_a
    send(server.port, ["secure@tls.test"])
    got = peers["tls"].wait_for(1, 30)[0]
    assert got.tls and got.recipients == ("secure@tls.test",)
    assert got.client_cert is not None  # control/clientcert.pem was presented
    log_has(home, "mx.tls.test [127.0.0.25]")
    log = (home / "server.log").read_text()
    assert "mx.tls.test [127.0.0.25]:" in log and " TLS TLSv1." in log


def test_tlshosts_with_an_unverifiable_certificate_defers(
    instance_a: tuple[Path, Server], peers: dict[str, SmtpPeer]
) -> None:
    home, server = instance_a
    send(server.port, ["secure@badtls.test"])
    log_has(home, "to=secure@badtls.test channel=remote result=deferral")
    log_has(home, "TLS unable to verify server with")
    assert peers["badtls"].messages == []  # never in clear text


def test_connection_dropped_mid_data_defers(
    instance_a: tuple[Path, Server], peers: dict[str, SmtpPeer]
) -> None:
    home, server = instance_a
    send(server.port, ["victim@drop.test"])
    log_has(home, "to=victim@drop.test channel=remote result=deferral")
    log_has(home, "connection died")
    assert peers["drop"].messages == []


@pytest.mark.parametrize(
    ("rcpt", "report"),
    [
        ("x@nullmx.test", b"does not accept mail"),
        ("x@nx.test", b"Sorry, I couldn't find any host named nx.test. (#5.1.2)"),
    ],
)
def test_null_mx_and_no_such_domain_bounce_at_once(
    instance_a: tuple[Path, Server], rcpt: str, report: bytes
) -> None:
    home, server = instance_a
    send(server.port, [rcpt])
    bounce = wait_for_mail(home, "alice", f"<{rcpt}>:".encode())
    assert report in bounce


@pytest.mark.parametrize("rcpt", ["r@routed.test", "i@implicit.test"])
def test_smtproutes_and_implicit_mx(
    instance_a: tuple[Path, Server], peers: dict[str, SmtpPeer], rcpt: str
) -> None:
    _, server = instance_a
    before = len(peers["good"].messages)
    send(server.port, [rcpt])
    wait_until(
        lambda: any(m.recipients == (rcpt,) for m in peers["good"].messages[before:]),
        30,
        f"{rcpt} at the good peer",
    )


def test_eight_bit_mail_to_a_seven_bit_server_bounces(
    instance_a: tuple[Path, Server], peers: dict[str, SmtpPeer]
) -> None:
    home, server = instance_a
    send(server.port, ["x@sevenbit.test"], "caf\u00e9\r\n".encode())
    bounce = wait_for_mail(home, "alice", b"<x@sevenbit.test>:")
    assert b"8BITMIME" in bounce and b"#5.6.3" in bounce
    assert peers["sevenbit"].messages == []
    send(server.port, ["y@sevenbit.test"], b"plain ascii\r\n")
    assert peers["sevenbit"].wait_for(1, 30)[0].recipients == ("y@sevenbit.test",)
    # A big message is scanned off the event loop, with the same verdict.
    big = b"x" * 98 + b"\r\n"
    send(server.port, ["z@sevenbit.test"], big * 1000 + "\u00e9\r\n".encode())
    bounce = wait_for_mail(home, "alice", b"<z@sevenbit.test>:")
    assert b"#5.6.3" in bounce


def test_dead_domain_bounces_after_queuelifetime(
    tmp_path: Path, dns: str, peers: dict[str, SmtpPeer]
) -> None:
    # queuelifetime 0: the first attempt is already past the lifetime, so it is the last
    # one and its deferral turns into a bounce (qmail's rule), with no clock to wait for.
    home = make_home(tmp_path)
    _configure(home, dns, peers["good"].port, lifetime=0)
    server = Server(home)
    try:
        send(server.port, ["lost@dead.test"])
        bounce = wait_for_mail(home, "alice", b"<lost@dead.test>:")
    finally:
        server.stop()
    assert b"Sorry, I wasn't able to establish an SMTP connection. (#4.4.1)\n" in bounce
    assert b"I'm not going to try again; this message has been in the queue too long." in bounce


def test_kill_9_while_relaying_loses_nothing(
    tmp_path: Path, dns: str, peers: dict[str, SmtpPeer]
) -> None:
    """Every message that got a 250 reaches the peer, across a kill -9 and a restart
    (duplicates are allowed: at-least-once, as qmail)."""
    home = make_home(tmp_path)
    _configure(home, dns, peers["good"].port)
    good = peers["good"]
    wanted = {f"crash{i}@routed.test" for i in range(40)}
    server = Server(home)
    try:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
            for i, rcpt in enumerate(sorted(wanted)):
                client.sendmail("alice@example.test", [rcpt], f"Subject: {i}\r\n\r\nx\r\n")
                if i == 20:
                    server.kill9()  # mid-flow: some relayed, some queued, some in flight
                    break
        accepted = set(sorted(wanted)[:21])
    finally:
        server.kill9()
    server = Server(home)
    try:

        def arrived() -> bool:
            got = {r for m in good.messages for r in m.recipients}
            return accepted <= got

        wait_until(arrived, 60, "every accepted message at the peer after restart")
    finally:
        server.stop()
