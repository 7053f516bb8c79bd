"""Inbound SPF, DKIM and DMARC on port 25, end to end: a started server, a dnsmasq zone
publishing the SPF, DKIM and DMARC records, mail sent with smtplib from loopback
addresses that tcp.smtp does not make relay clients."""

from __future__ import annotations

import base64
import smtplib
import time
from collections.abc import Iterator

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from tests.dnsserver import DnsServer, Zone

from .harness import DEAD_DNS, Server, make_home, wait_for_mail, wait_until

JUDGED = "127.0.0.20"  # an ordinary client on port 25
RELAY = "127.0.0.21"  # RELAYCLIENT: never judged
OFF = "127.0.0.22"  # MAILAUTH="0"
KEY = ed25519.Ed25519PrivateKey.generate()


def _key_record() -> str:
    public = KEY.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return "v=DKIM1; k=ed25519; p=" + base64.b64encode(public).decode()


def zone() -> Zone:
    return Zone(
        domains=("test",),
        hosts=[("mx.example.test", "127.0.0.1")],
        txt=[
            ("good.test", "v=spf1 ip4:127.0.0.0/8 -all"),
            ("_dmarc.good.test", "v=DMARC1; p=reject"),
            ("ed._domainkey.good.test", _key_record()),
            ("strict.test", "v=spf1 -all"),
            ("_dmarc.strict.test", "v=DMARC1; p=reject"),
            ("quar.test", "v=spf1 -all"),
            ("_dmarc.quar.test", "v=DMARC1; p=quarantine"),
        ],
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    dns = DnsServer(zone())
    address = dns.start()
    home = make_home(tmp_path_factory.mktemp("mailauth"), mailauth=True)
    settings = home / "qtoaster.toml"
    text = settings.read_text().replace(
        f'nameservers = ["{DEAD_DNS}"]', f'nameservers = ["{address}"]'
    )
    settings.write_text(text + "\n[mailauth]\ntimeout = 2\n")
    tcp = home / "tcp.smtp"
    rules = [f"{JUDGED}:allow", f'{RELAY}:allow,RELAYCLIENT=""', f'{OFF}:allow,MAILAUTH="0"']
    tcp.write_text("\n".join(rules) + "\n" + tcp.read_text())
    srv = Server(home)
    try:
        yield srv
    finally:
        srv.stop()
        dns.stop()


def message(sender: str, subject: str, extra: bytes = b"") -> bytes:
    return (
        extra
        + f"From: {sender}\nTo: alice@example.test\nSubject: {subject}\n"
        f"Message-ID: <{subject}@test>\n\nHello.\n".encode()
    )


def signed(data: bytes) -> bytes:
    raw = KEY.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    signature = dkim.sign(
        data, b"ed", b"good.test", base64.b64encode(raw), signature_algorithm=b"ed25519-sha256"
    )
    return signature.replace(b"\r\n", b"\n") + data


def send(server: Server, source: str, sender: str, data: bytes) -> None:
    with smtplib.SMTP(
        timeout=30, local_hostname="client.good.test", source_address=(source, 0)
    ) as smtp:
        smtp.connect("127.0.0.1", server.port)
        smtp.sendmail(sender, ["alice@example.test"], data.replace(b"\n", b"\r\n"))


def refused(server: Server, source: str, sender: str, data: bytes) -> tuple[int, bytes]:
    with pytest.raises(smtplib.SMTPDataError) as info:
        send(server, source, sender, data)
    return info.value.smtp_code, info.value.smtp_error


def log_has(server: Server, needle: str) -> None:
    log = server.home / "server.log"
    wait_until(lambda: needle in log.read_text(errors="replace"), 20, needle)


def test_a_pass_gets_our_header_and_a_forged_one_is_gone(server: Server) -> None:
    forged = b"Authentication-Results: mx.example.test; dmarc=pass header.from=evil\n"
    data = signed(message("Alice <a@good.test>", "pass1", forged))
    send(server, JUDGED, "bounce@good.test", data)
    stored = wait_for_mail(server.home, "alice", b"pass1")
    assert b"dmarc=pass header.from=evil" not in stored
    head = stored.split(b"\n\n", 1)[0]
    assert head.count(b"Authentication-Results: mx.example.test;") == 1
    assert b"spf=pass smtp.mailfrom=bounce@good.test" in head
    assert b"dkim=pass header.d=good.test header.s=ed" in head
    assert b"dmarc=pass header.from=good.test" in head


def test_a_forged_from_under_p_reject_is_refused(server: Server) -> None:
    code, text = refused(server, JUDGED, "ceo@strict.test", message("ceo@strict.test", "fake"))
    assert code == 550
    assert b"DMARC" in text and b"5.7.1" in text
    log_has(server, "refused session=")
    log_has(server, "stage=data reason=dmarc")


def test_quarantine_lands_in_junk(server: Server) -> None:
    send(server, JUDGED, "x@quar.test", message("boss@quar.test", "junk1"))
    junk = server.home / "domains" / "example.test" / "alice" / "Maildir" / ".Junk" / "new"
    wait_until(lambda: junk.is_dir() and any(junk.iterdir()), 20, ".Junk delivery")
    [stored] = [p.read_bytes() for p in junk.iterdir() if b"junk1" in p.read_bytes()]
    assert b"dmarc=fail header.from=quar.test" in stored


def test_relay_clients_and_mailauth_0_are_not_judged(server: Server) -> None:
    forged = b"Authentication-Results: mx.example.test; dmarc=pass\n"
    send(server, RELAY, "ceo@strict.test", message("ceo@strict.test", "relay1", forged))
    stored = wait_for_mail(server.home, "alice", b"relay1")
    assert b"Authentication-Results: mx.example.test" not in stored  # none added, forged gone
    send(server, OFF, "ceo@strict.test", message("ceo@strict.test", "off1"))
    wait_for_mail(server.home, "alice", b"off1")


def test_dns_failure_is_451(server: Server) -> None:
    started = time.monotonic()
    code, text = refused(server, JUDGED, "x@down.example", message("x@down.example", "down"))
    assert code == 451
    assert b"4.7" in text
    log_has(server, "refused session=")
    log_has(server, "stage=data reason=dmarc")
    assert time.monotonic() - started < 20
