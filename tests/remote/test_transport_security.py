"""MTA-STS and DANE in remote delivery, with real components on loopback.

nsd serves the zones (``dane.test`` and its kin signed, ``sts.test`` and kin not), unbound
validates (tests/dnssec.py); an HTTPS server with a test CA serves MTA-STS policies by Host
header; SMTP peers (tests/smtppeer.py) with STARTTLS stand for the MX hosts, each on its own
127.0.0.x address and one shared port.  The agent under test is the remote process's own
(`RemoteAgent` with `TransportSecurity`), driven directly.
"""

from __future__ import annotations

import hashlib
import http.server
import logging
import os
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from tests.dnssec import SignedDns, SignedZone
from tests.smtppeer import PeerBehaviour, SmtpPeer
from tests.tls.pki import PrivateCA

from qtoaster.core.outcome import Outcome
from qtoaster.remote.agent import RemoteAgent, RemoteConfig, RoutesFile
from qtoaster.remote.body import Body
from qtoaster.remote.dane import Dane
from qtoaster.remote.dns import Resolver
from qtoaster.remote.mtasts import MtaSts
from qtoaster.remote.session import Timeouts
from qtoaster.remote.tlspolicy import TransportSecurity
from qtoaster.tls.client import ClientTls

PEERS = {  # MX name -> loopback address
    "mx.dane.test": "127.0.0.41",
    "mx.danebad.test": "127.0.0.42",
    "mx.danetest.test": "127.0.0.43",
    "mx.insecure.test": "127.0.0.44",
    "mx.sts.test": "127.0.0.45",
    "mx.other.test": "127.0.0.46",
    "mx.stsbadcert.test": "127.0.0.47",
    "mx.rtls.test": "127.0.0.48",  # offers REQUIRETLS
    "mx.nortls.test": "127.0.0.49",  # TLS, no REQUIRETLS
    "mx.clear.test": "127.0.0.50",  # no TLS at all
}
HTTPS_ADDRESS = "127.0.0.40"
MESSAGE = b"From: a@example.org\nSubject: hi\n\nhello\n"
NO_TLS_REQUIRED = b"From: a@example.org\nTLS-Required: No\nSubject: hi\n\nhello\n"

POLICIES = {
    "sts.test": "version: STSv1\nmode: enforce\nmx: mx.sts.test\nmax_age: 86400\n",
    "stsbadmx.test": "version: STSv1\nmode: enforce\nmx: *.sts.test\nmax_age: 86400\n",
    "stsbadcert.test": "version: STSv1\nmode: enforce\nmx: mx.stsbadcert.test\nmax_age: 86400\n",
    "ststesting.test": "version: STSv1\nmode: testing\nmx: mx.sts.test\nmax_age: 86400\n",
}


class Pki:
    def __init__(self, tmp: Path) -> None:
        self.ca = PrivateCA()
        self.other = PrivateCA("another CA")
        self.ca_file = tmp / "ca.pem"
        self.ca_file.write_bytes(self.ca.cert_pem)
        self.tmp = tmp
        self.leaves: dict[str, bytes] = {}

    def context(
        self, name: str, ca: PrivateCA | None = None, with_ca: bool = False
    ) -> ssl.SSLContext:
        issuer = ca or self.ca
        cert, pem = issuer.issue(name, dns=[name])
        self.leaves[name] = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        path = self.tmp / f"{name}.pem"
        path.write_bytes(pem + (issuer.cert_pem if with_ca else b""))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(path)
        return context


def _sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def peers(pki: Pki) -> Iterator[dict[str, SmtpPeer]]:
    contexts = {
        "mx.dane.test": pki.context("mx.dane.test"),
        "mx.danebad.test": pki.context("mx.danebad.test"),
        "mx.danetest.test": pki.context("mx.danetest.test", with_ca=True),
        "mx.insecure.test": pki.context("mx.insecure.test", pki.other),
        "mx.sts.test": pki.context("mx.sts.test"),
        "mx.other.test": pki.context("mx.other.test"),
        "mx.stsbadcert.test": pki.context("mx.stsbadcert.test", pki.other),
    }
    contexts["mx.rtls.test"] = pki.context("mx.rtls.test")
    contexts["mx.nortls.test"] = pki.context("mx.nortls.test")
    started: dict[str, SmtpPeer] = {}
    port = 0
    try:
        for name, address in PEERS.items():
            behaviour = PeerBehaviour(tls=contexts.get(name))
            if name == "mx.rtls.test":
                behaviour.extensions = (*behaviour.extensions, "REQUIRETLS")
            started[name] = SmtpPeer(address, port, behaviour).start()
            port = started[name].port
        yield started
    finally:
        for peer in started.values():
            peer.stop()


@pytest.fixture(scope="module")
def resolver_address(pki: Pki, peers: dict[str, SmtpPeer]) -> Iterator[str]:
    ca_der = pki.ca.cert.public_bytes(serialization.Encoding.DER)

    def mx(domain: str, host: str) -> list[str]:
        records = [f"{domain}. IN MX 10 {host}."]
        if host.endswith("." + domain):  # the others are served by their own zone
            records.append(f"{host}. IN A {PEERS[host]}")
        return records

    zones = [
        SignedZone(
            "dane.test",
            [
                *mx("dane.test", "mx.dane.test"),
                f"_25._tcp.mx IN TLSA 3 1 1 {_sha256(pki.leaves['mx.dane.test'])}",
            ],
        ),
        SignedZone(
            "danebad.test",
            [*mx("danebad.test", "mx.danebad.test"), f"_25._tcp.mx IN TLSA 3 1 1 {'00' * 32}"],
        ),
        SignedZone(
            "danetest.test",
            [
                *mx("danetest.test", "mx.danetest.test"),
                f"_25._tcp.mx IN TLSA 2 0 1 {_sha256(ca_der)}",
            ],
        ),
        SignedZone(
            "insecure.test",
            [*mx("insecure.test", "mx.insecure.test"), f"_25._tcp.mx IN TLSA 3 1 1 {'00' * 32}"],
            signed=False,
        ),
        SignedZone("other.test", [f"mx IN A {PEERS['mx.other.test']}"], signed=False),
        *(
            SignedZone(domain, mx(domain, f"mx.{domain}"), signed=False)
            for domain in ("rtls.test", "nortls.test", "clear.test")
        ),
        SignedZone(
            "sts.test",
            [
                *mx("sts.test", "mx.sts.test"),
                '_mta-sts IN TXT "v=STSv1; id=1"',
                f"mta-sts IN A {HTTPS_ADDRESS}",
            ],
            signed=False,
        ),
        *(
            SignedZone(
                domain,
                [
                    *mx(domain, host),
                    '_mta-sts IN TXT "v=STSv1; id=7"',
                    f"mta-sts IN A {HTTPS_ADDRESS}",
                ],
                signed=False,
            )
            for domain, host in (
                ("stsbadmx.test", "mx.other.test"),
                ("stsbadcert.test", "mx.stsbadcert.test"),
                ("ststesting.test", "mx.other.test"),
            )
        ),
    ]
    with SignedDns(zones) as address:
        yield address


class PolicyServer:
    """HTTPS on HTTPS_ADDRESS at a free port: POLICIES by Host header, in its own thread."""

    def __init__(self, pki: Pki) -> None:
        names = [f"mta-sts.{d}" for d in POLICIES]
        _, pem = pki.ca.issue(names[0], dns=names)
        path = pki.tmp / "https.pem"
        path.write_bytes(pem)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(path)
        self.fetches = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.fetches += 1
                host = self.headers.get("Host", "").removeprefix("mta-sts.")
                body = POLICIES.get(host, "").encode()
                if self.path != "/.well-known/mta-sts.txt" or not body:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer((HTTPS_ADDRESS, 0), Handler)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def policy_server(pki: Pki) -> Iterator[PolicyServer]:
    server = PolicyServer(pki)
    try:
        yield server
    finally:
        server.stop()


def _agent(
    resolver_address: str, port: int, https_port: int, pki: Pki, tmp: Path, dane: bool = True
) -> RemoteAgent:
    control = tmp / "control"
    control.mkdir(exist_ok=True)
    resolver = Resolver([resolver_address], local_ips=frozenset())
    tls = ClientTls(control)
    mtasts = MtaSts(
        resolver.txt, resolver.addresses, tmp / "mta-sts", cafile=str(pki.ca_file), port=https_port
    )
    security = TransportSecurity(
        tls, mtasts, Dane([resolver_address]) if dane else None, str(pki.ca_file)
    )
    config = RemoteConfig("a.test", port, Timeouts(connect=5, remote=10), None)
    return RemoteAgent(config, resolver, RoutesFile(tmp / "smtproutes"), tls, security)


@pytest.fixture
def body(tmp_path: Path) -> Iterator[Body]:
    path = tmp_path / "message"
    path.write_bytes(MESSAGE)
    fd = os.open(path, os.O_RDONLY)
    try:
        yield Body(fd, 0, len(MESSAGE))
    finally:
        os.close(fd)


async def _deliver(
    agent: RemoteAgent, body: Body, domain: str, requiretls: bool = False
) -> tuple[Outcome, str]:
    try:
        attempt = await agent.deliver(body, "a@example.org", [f"u@{domain}"], domain, requiretls)
    finally:
        await agent.close()
    (result,) = attempt.results
    return result.outcome, result.report


@pytest.fixture
def setup(
    resolver_address: str,
    peers: dict[str, SmtpPeer],
    pki: Pki,
    policy_server: PolicyServer,
    tmp_path: Path,
) -> tuple[RemoteAgent, dict[str, SmtpPeer]]:
    port = peers["mx.dane.test"].port
    return _agent(resolver_address, port, policy_server.port, pki, tmp_path), peers


# -- DANE ------------------------------------------------------------------------------


async def test_dane_ee_match_delivers(
    setup: tuple[RemoteAgent, dict[str, SmtpPeer]], body: Body
) -> None:
    agent, peers = setup
    before = len(peers["mx.dane.test"].messages)
    outcome, report = await _deliver(agent, body, "dane.test")
    assert outcome is Outcome.SUCCESS, report
    (message,) = peers["mx.dane.test"].messages[before:]
    assert message.tls


async def test_dane_mismatch_defers(
    setup: tuple[RemoteAgent, dict[str, SmtpPeer]], body: Body, caplog: pytest.LogCaptureFixture
) -> None:
    agent, peers = setup
    caplog.set_level(logging.INFO, "qtoaster.remote")
    before = len(peers["mx.danebad.test"].messages)
    outcome, report = await _deliver(agent, body, "danebad.test")
    assert outcome is Outcome.TEMPORARY
    assert "certificate does not match the TLSA records" in report
    assert len(peers["mx.danebad.test"].messages) == before
    assert "refused by DANE TLSA records of mx.danebad.test" in caplog.text


async def test_dane_ta_delivers(setup: tuple[RemoteAgent, dict[str, SmtpPeer]], body: Body) -> None:
    agent, peers = setup
    before = len(peers["mx.danetest.test"].messages)
    outcome, report = await _deliver(agent, body, "danetest.test")
    assert outcome is Outcome.SUCCESS, report
    assert len(peers["mx.danetest.test"].messages) == before + 1


async def test_insecure_zone_is_opportunistic(
    setup: tuple[RemoteAgent, dict[str, SmtpPeer]], body: Body
) -> None:
    """TLSA records that do not match, but unsigned: ignored; any certificate will do."""
    agent, peers = setup
    before = len(peers["mx.insecure.test"].messages)
    outcome, report = await _deliver(agent, body, "insecure.test")
    assert outcome is Outcome.SUCCESS, report
    (message,) = peers["mx.insecure.test"].messages[before:]
    assert message.tls


# -- MTA-STS ---------------------------------------------------------------------------


async def test_sts_enforce_delivers_to_a_listed_mx(
    setup: tuple[RemoteAgent, dict[str, SmtpPeer]], body: Body
) -> None:
    agent, peers = setup
    before = len(peers["mx.sts.test"].messages)
    outcome, report = await _deliver(agent, body, "sts.test")
    assert outcome is Outcome.SUCCESS, report
    (message,) = peers["mx.sts.test"].messages[before:]
    assert message.tls


async def test_sts_enforce_refuses_an_unlisted_mx(
    setup: tuple[RemoteAgent, dict[str, SmtpPeer]], body: Body, caplog: pytest.LogCaptureFixture
) -> None:
    agent, peers = setup
    caplog.set_level(logging.INFO, "qtoaster.remote")
    connections = peers["mx.other.test"].connections
    outcome, report = await _deliver(agent, body, "stsbadmx.test")
    assert outcome is Outcome.TEMPORARY
    assert report == (
        "Sorry, no usable MX host: mx.other.test is not an MX host of the "
        "MTA-STS policy of stsbadmx.test (enforce). (#4.7.5)"
    )
    assert peers["mx.other.test"].connections == connections  # never connected


async def test_sts_enforce_refuses_a_bad_certificate(
    setup: tuple[RemoteAgent, dict[str, SmtpPeer]], body: Body, caplog: pytest.LogCaptureFixture
) -> None:
    agent, peers = setup
    caplog.set_level(logging.INFO, "qtoaster.remote")
    before = len(peers["mx.stsbadcert.test"].messages)
    outcome, report = await _deliver(agent, body, "stsbadcert.test")
    assert outcome is Outcome.TEMPORARY
    assert "TLS unable to verify server with the MTA-STS policy of stsbadcert.test" in report
    assert len(peers["mx.stsbadcert.test"].messages) == before
    assert "refused by the MTA-STS policy of stsbadcert.test (enforce)" in caplog.text


async def test_sts_testing_delivers_and_logs(
    setup: tuple[RemoteAgent, dict[str, SmtpPeer]], body: Body, caplog: pytest.LogCaptureFixture
) -> None:
    agent, peers = setup
    caplog.set_level(logging.INFO, "qtoaster.remote")
    before = len(peers["mx.other.test"].messages)
    outcome, report = await _deliver(agent, body, "ststesting.test")
    assert outcome is Outcome.SUCCESS, report
    assert len(peers["mx.other.test"].messages) == before + 1
    assert (
        "mx.other.test: the MTA-STS policy of ststesting.test (testing) would refuse it: "
        "not an MX host of it"
    ) in caplog.text


async def test_sts_policy_is_cached_on_disk(
    resolver_address: str,
    peers: dict[str, SmtpPeer],
    pki: Pki,
    tmp_path: Path,
    body: Body,
) -> None:
    """Fetched once; a new agent (a restarted process) with the HTTPS server gone still
    enforces the policy it finds on disk."""
    server = PolicyServer(pki)
    port = peers["mx.dane.test"].port
    try:
        agent = _agent(resolver_address, port, server.port, pki, tmp_path)
        outcome, report = await _deliver(agent, body, "stsbadmx.test")
        assert outcome is Outcome.TEMPORARY and "MTA-STS" in report
        assert server.fetches == 1
    finally:
        server.stop()
    assert (tmp_path / "mta-sts" / "stsbadmx.test.json").exists()
    agent = _agent(resolver_address, port, server.port, pki, tmp_path)
    outcome, report = await _deliver(agent, body, "stsbadmx.test")
    assert outcome is Outcome.TEMPORARY
    assert "is not an MX host of the MTA-STS policy of stsbadmx.test (enforce)" in report


# -- REQUIRETLS (RFC 8689) and TLS-Required: No ----------------------------------------


async def test_requiretls_delivers_to_a_verified_host_that_offers_it(
    setup: tuple[RemoteAgent, dict[str, SmtpPeer]], body: Body
) -> None:
    agent, peers = setup
    peer = peers["mx.rtls.test"]
    before = len(peer.messages)
    outcome, report = await _deliver(agent, body, "rtls.test", requiretls=True)
    assert outcome is Outcome.SUCCESS, report
    (message,) = peer.messages[before:]
    assert message.tls
    assert "MAIL FROM:<a@example.org> SIZE=39 REQUIRETLS" in peer.transcript


async def test_requiretls_bounces_when_the_host_does_not_offer_it(
    setup: tuple[RemoteAgent, dict[str, SmtpPeer]], body: Body
) -> None:
    agent, peers = setup
    before = len(peers["mx.nortls.test"].messages)
    outcome, report = await _deliver(agent, body, "nortls.test", requiretls=True)
    assert outcome is Outcome.PERMANENT
    assert report == (
        "127.0.0.49 does not support REQUIRETLS, which the sender required. (#5.7.30)"
    )
    assert len(peers["mx.nortls.test"].messages) == before
    # The same domain without REQUIRETLS: delivered as before.
    outcome, report = await _deliver(agent, body, "nortls.test")
    assert outcome is Outcome.SUCCESS, report


async def test_requiretls_bounces_without_tls(
    setup: tuple[RemoteAgent, dict[str, SmtpPeer]], body: Body
) -> None:
    agent, _ = setup
    outcome, report = await _deliver(agent, body, "clear.test", requiretls=True)
    assert outcome is Outcome.PERMANENT
    assert report == ("No TLS achieved while the REQUIRETLS option of the message exists (#5.7.10)")


@pytest.fixture
def relaxed_body(tmp_path: Path) -> Iterator[Body]:
    path = tmp_path / "relaxed"
    path.write_bytes(NO_TLS_REQUIRED)
    fd = os.open(path, os.O_RDONLY)
    try:
        yield Body(fd, 0, len(NO_TLS_REQUIRED))
    finally:
        os.close(fd)


async def test_tls_required_no_ignores_dane_and_mta_sts(
    setup: tuple[RemoteAgent, dict[str, SmtpPeer]], relaxed_body: Body
) -> None:
    agent, peers = setup
    before = len(peers["mx.danebad.test"].messages)
    outcome, report = await _deliver(agent, relaxed_body, "danebad.test")
    assert outcome is Outcome.SUCCESS, report
    assert len(peers["mx.danebad.test"].messages) == before + 1
    outcome, report = await _deliver(agent, relaxed_body, "stsbadmx.test")
    assert outcome is Outcome.SUCCESS, report
