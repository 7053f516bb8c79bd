"""CPU per message of inbound verification: SPF + DKIM + DMARC (+ ARC, iprev), cached DNS.

Issue 14 asks for the CPU ms per message of verifying at 1 KB and 100 KB.  A dnsmasq on
loopback (tests/dnsserver.py, TTL 3600) serves the sender's SPF and DMARC records and an
RSA-2048 DKIM key; the messages carry one RSA-2048 DKIM signature (relaxed/relaxed).
After one warm-up evaluation every answer comes from the verifier's resolver cache, so
the figure is the verification's own CPU (process time of this one thread), as on a busy
MX that sees the same senders again and again.

Run from a checkout: ``PYTHONPATH=src:. python bench/mailauth_verify.py [--count N]``.
"""

from __future__ import annotations

import argparse
import base64
import time

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from tests.dnsserver import DnsServer, Zone

from qtoaster.mailauth.dnsquery import Lookup
from qtoaster.mailauth.verifier import Verifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200, help="messages per size")
    args = parser.parse_args()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    zone = Zone(
        txt=[
            ("sender.test", "v=spf1 ip4:127.0.0.0/8 -all"),
            ("_dmarc.sender.test", "v=DMARC1; p=reject"),
            ("s1._domainkey.sender.test", "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()),
        ],
        ttl=3600,
    )
    with DnsServer(zone) as address:
        verifier = Verifier(Lookup.build([address], 2.0), "mx.example.net", workers=1)
        for size in (1024, 100 * 1024):
            body = (b"x" * 70 + b"\n") * (size // 71)
            message = (
                b"From: a@sender.test\nTo: b@example.net\nSubject: bench\n"
                b"Message-ID: <1@sender.test>\n\n" + body
            )
            message = (
                dkim.sign(message, b"s1", b"sender.test", pem).replace(b"\r\n", b"\n") + message
            )
            first = verifier.evaluate_message(
                "127.0.0.9", "c.sender.test", "a@sender.test", message
            )
            assert first.dmarc.result == "pass", first
            assert [d.result for d in first.dkim] == ["pass"], first.dkim
            started = time.thread_time()
            for _ in range(args.count):
                verifier.evaluate_message("127.0.0.9", "c.sender.test", "a@sender.test", message)
            cpu = (time.thread_time() - started) / args.count * 1000
            print(
                f"{len(message) // 1024:4d} KB: {cpu:.2f} ms CPU per message",
                f"({args.count} messages)",
            )
        verifier.close()


if __name__ == "__main__":
    main()
