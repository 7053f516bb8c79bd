"""Early talkers and weighted DNSBL scoring with a real ``qtoaster run``, raw sockets,
smtplib and a real DNS server serving two block lists and an allow list (issue 18;
docs/antispam.md "Early talkers", "DNSBL scoring"): a client that talks before the
greeting is refused; one that pipelines without PIPELINING is refused; smtplib passes,
after the greeting delay; weight 3 refused, weight 1 under threshold 2 accepted, the
DNSWL-listed client passes and skips greylisting; each tcp.smtp switch.
"""

from __future__ import annotations

import smtplib
import socket
import time
from collections.abc import Iterator

import pytest
from tests.dnsserver import DnsServer, Zone

from .harness import DEAD_DNS, Server, make_home, wait_for_mail

pytestmark = pytest.mark.integration

WAIT = 0.5
NORMAL = "127.0.0.1"
BLACK = "127.0.0.2"  # on black.test (weight 3): refused
GREY = "127.0.0.3"  # on grey.test only (weight 1 < threshold 2): accepted
WHITE = "127.0.0.4"  # on white.test (weight -5): allowed, not greylisted, not screened
GREYLISTED = "127.0.0.5"  # greylisting on, listed nowhere: 451 (greylisting is on)
NO_DNSBL = "127.0.0.6"  # on black.test, but DNSBL="0"
NO_PREGREET = "127.0.0.7"  # PREGREET="0"
TRANSACTION = b"MAIL FROM:<a@remote.test>\r\nRCPT TO:<alice@example.test>\r\n"


@pytest.fixture(scope="module")
def dns() -> Iterator[str]:
    zone = Zone(
        domains=("test",),
        hosts=[
            ("2.0.0.127.black.test", "127.0.0.2"),
            ("6.0.0.127.black.test", "127.0.0.2"),
            ("3.0.0.127.grey.test", "127.0.0.2"),
            ("4.0.0.127.white.test", "127.0.10.2"),
        ],
    )
    server = DnsServer(zone)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, dns: str) -> Iterator[Server]:
    home = make_home(tmp_path_factory.mktemp("pregreet"))
    settings = home / "qtoaster.toml"
    text = settings.read_text().replace(f'nameservers = ["{DEAD_DNS}"]', f'nameservers = ["{dns}"]')
    text += (
        f"\n[pregreet]\nenabled = true\nwait = {WAIT}\n"
        '\n[dnsbl]\nsites = ["black.test*3", "grey.test*1",'
        ' "white.test=127.0.[0..255].[2..3]*-5"]\n'
        "threshold = 2\nallow_threshold = -1\n"
        "\n[greylist]\nenabled = true\n"
    )
    settings.write_text(text)
    rules = [
        f"{WHITE}:allow",
        f"{GREYLISTED}:allow",
        f'{NO_DNSBL}:allow,DNSBL="0",GREYLIST="0"',
        f'{NO_PREGREET}:allow,PREGREET="0",GREYLIST="0"',
        ':allow,GREYLIST="0"',
    ]
    (home / "tcp.smtp").write_text("\n".join(rules) + "\n")
    srv = Server(home, workers=1)
    try:
        yield srv
    finally:
        srv.stop()


def early(port: int, source: str, data: bytes) -> list[bytes]:
    """Send ``data`` at once after connecting (before any greeting), then read every
    reply line until the server hangs up (the data ends in QUIT)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20, source_address=(source, 0)) as s:
        s.sendall(data)
        received = b""
        while chunk := s.recv(65536):
            received += chunk
    return [line for line in received.split(b"\r\n") if line and line[3:4] != b"-"]


def pipelined(port: int, source: str, data: bytes) -> list[bytes]:
    """Wait for the greeting, then send ``data`` in one write (it ends in QUIT)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20, source_address=(source, 0)) as s:
        f = s.makefile("rb")
        greeting = f.readline()
        assert greeting.startswith(b"220 ")
        s.sendall(data)
        return [line.rstrip(b"\r\n") for line in f if line[3:4] != b"-"]


def rcpt_code(port: int, source: str) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, timeout=20, source_address=(source, 0)) as client:
        client.ehlo("client.example")
        client.mail("sender@remote.test")
        return client.rcpt("alice@example.test")


def test_a_client_that_talks_before_the_greeting_is_refused(server: Server) -> None:
    replies = early(server.port, NORMAL, b"EHLO bot.test\r\n" + TRANSACTION + b"QUIT\r\n")
    assert replies[3] == b"550 5.5.1 protocol error: talked before the greeting (#5.5.1)"
    log = (server.home / "server.log").read_text(errors="replace")
    assert "reason=pregreet code=550" in log


def test_pipelining_without_pipelining_is_refused(server: Server) -> None:
    replies = pipelined(server.port, NORMAL, b"HELO bot.test\r\n" + TRANSACTION + b"QUIT\r\n")
    assert replies[2] == (
        b"550 protocol error: commands sent ahead of replies without PIPELINING (#5.5.1)"
    )  # after HELO: no enhanced codes (RFC 2034)
    assert "reason=pipelining" in (server.home / "server.log").read_text(errors="replace")


def test_smtplib_passes_after_the_greeting_delay(server: Server) -> None:
    started = time.monotonic()
    with smtplib.SMTP("127.0.0.1", server.port, timeout=20) as client:
        waited = time.monotonic() - started  # smtplib reads the greeting in connect()
        client.sendmail(
            "sender@remote.test", ["alice@example.test"], b"Subject: calm\r\n\r\nhi\r\n"
        )
    assert waited >= WAIT
    wait_for_mail(server.home, "alice", b"Subject: calm")


def test_dnsbl_weights_and_threshold(server: Server) -> None:
    code, text = rcpt_code(server.port, BLACK)
    assert (code, text) == (
        550,
        b"5.7.1 Service unavailable; client [127.0.0.2] blocked using black.test (#5.7.1)",
    )
    assert rcpt_code(server.port, GREY)[0] == 250  # weight 1 < threshold 2
    log = (server.home / "server.log").read_text(errors="replace")
    assert "reason=dnsbl code=550" in log and 'why="score=3"' in log


def test_a_dnswl_client_skips_greylisting_and_the_screens(server: Server) -> None:
    assert rcpt_code(server.port, GREYLISTED)[0] == 451  # greylisting is on
    assert rcpt_code(server.port, WHITE)[0] == 250
    replies = early(server.port, WHITE, b"EHLO w.test\r\n" + TRANSACTION + b"QUIT\r\n")
    assert replies[3].startswith(b"250 ")  # talked early, but allowed


def test_tcp_smtp_switches(server: Server) -> None:
    assert rcpt_code(server.port, NO_DNSBL)[0] == 250  # listed on black.test, DNSBL="0"
    replies = early(server.port, NO_PREGREET, b"EHLO c.test\r\n" + TRANSACTION + b"QUIT\r\n")
    assert [r[:3] for r in replies] == [b"220", b"250", b"250", b"250", b"221"]
