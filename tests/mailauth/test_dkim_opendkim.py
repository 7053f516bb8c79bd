"""Our DKIM signatures checked by OpenDKIM (``opendkim-testmsg``, Debian opendkim-tools),
an implementation independent of both ours and dkimpy.

opendkim-testmsg asks DNS through the C library's resolver, which reads
/etc/resolv.conf and always uses port 53: the tool runs in its own mount namespace
(``unshare -m``) where /etc/resolv.conf names a dnsmasq on a loopback address of its own,
port 53, serving the keys' TXT records.  Root is needed for both (the CI runs as root).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import pytest
from tests.dnsserver import find_dnsmasq

from qtoaster.mailauth import dkimkeys
from qtoaster.mailauth.dkimsign import sign_message

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: port 53 and a mount namespace"),
    pytest.mark.skipif(shutil.which("opendkim-testmsg") is None, reason="opendkim-tools missing"),
]

MESSAGE = (
    b"From: Ann <ann@example.org>\n"
    b"To: bob@example.net\n"
    b"Subject: checked by OpenDKIM\n"
    b"Date: Mon, 7 Dec 2026 03:00:00 +0000\n"
    b"Message-ID: <odkim@example.org>\n"
    b"MIME-Version: 1.0\n"
    b"Content-Type: text/plain; charset=utf-8\n"
    b"\n"
    b"Hello,  world \t\n"
    b"\xc3\xa9t\xc3\xa9\n"
    b"\n\n"
)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dkimkeys.DkimKey]]:
    store = tmp_path_factory.mktemp("odkim") / "dkim"
    made = [dkimkeys.generate(store, "example.org", alg) for alg in ("rsa", "ed25519")]
    return store, [dkimkeys.set_state(store, key, "active") for key in made]


@pytest.fixture(scope="module")
def resolv(
    keys: tuple[Path, list[dkimkeys.DkimKey]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """A resolv.conf naming a dnsmasq on 127.x.y.z:53 that serves the keys' records."""
    _, made = keys
    tmp = tmp_path_factory.mktemp("odkim-dns")
    address = f"127.{random.randint(100, 250)}.{random.randint(1, 250)}.{random.randint(1, 250)}"
    lines = [
        "port=53",
        f"listen-address={address}",
        "bind-interfaces",
        "no-resolv",
        "no-hosts",
        "local=/example.org/",
        "user=root",
        "log-facility=-",
    ]
    for key in made:
        text = key.txt()
        parts = ",".join(f'"{text[i : i + 255]}"' for i in range(0, len(text), 255))
        lines.append(f"txt-record={key.record_name()},{parts}")
    (tmp / "dnsmasq.conf").write_text("\n".join(lines) + "\n")
    log = open(tmp / "dnsmasq.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [find_dnsmasq(), "--keep-in-foreground", f"--conf-file={tmp / 'dnsmasq.conf'}"],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    try:
        query = dns.message.make_query(made[0].record_name(), "TXT")
        deadline = time.monotonic() + 5
        while True:
            try:
                dns.query.udp(query, address, port=53, timeout=0.05)
                break
            except (OSError, dns.exception.Timeout):
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"dnsmasq did not start: {(tmp / 'dnsmasq.log').read_text()}")
        (tmp / "resolv.conf").write_text(f"nameserver {address}\n")
        yield tmp / "resolv.conf"
    finally:
        proc.terminate()
        proc.wait(5)
        log.close()


def opendkim_verify(resolv: Path, message: bytes) -> subprocess.CompletedProcess[bytes]:
    script = f'mount --bind "{resolv}" /etc/resolv.conf && exec opendkim-testmsg'
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", script],
        input=message.replace(b"\n", b"\r\n"),
        capture_output=True,
        timeout=30,
    )


@pytest.mark.parametrize("algorithm", ["rsa-sha256", "ed25519-sha256"])
def test_opendkim_verifies_our_signature(
    keys: tuple[Path, list[dkimkeys.DkimKey]], resolv: Path, algorithm: str
) -> None:
    store, made = keys
    (key,) = [k for k in made if k.algorithm == algorithm]
    (signer,) = [
        s for s in dkimkeys.active_signers_of(store, "example.org") if s.algorithm == algorithm
    ]
    signed = sign_message(MESSAGE, [signer], now=int(time.time()), expiry=3600) + MESSAGE
    good = opendkim_verify(resolv, signed)
    assert good.returncode == 0 and good.stdout == b"" and good.stderr == b"", good
    # The check is real: a changed body fails.
    bad = opendkim_verify(resolv, signed.replace(b"Hello,", b"Hullo,"))
    assert bad.returncode != 0 and b"Bad signature" in bad.stderr, bad
    assert key.selector in signed.decode("utf-8", "replace")
