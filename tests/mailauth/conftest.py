"""Keys, a TXT table standing in for DNS, and signers for the mailauth tests."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from qtoaster.mailauth.dnsquery import DnsTemporary

Txt = dict[str, bytes | Exception]


@pytest.fixture(scope="session")
def rsa_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes, bytes]:
    """(PEM path, PEM bytes, DKIM TXT record) of an RSA-2048 key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path = tmp_path_factory.mktemp("keys") / "rsa.pem"
    path.write_bytes(pem)
    return path, pem, b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


@pytest.fixture(scope="session")
def ed_key() -> tuple[bytes, bytes]:
    """(dkimpy's private key form: base64 of the raw 32 bytes, DKIM TXT record)."""
    key = ed25519.Ed25519PrivateKey.generate()
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return base64.b64encode(raw), b"v=DKIM1; k=ed25519; p=" + base64.b64encode(public)


def dnsfunc(table: Txt) -> Callable[..., bytes | None]:
    """dkimpy's dnsfunc over ``table`` (name without the trailing dot)."""

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        value = table.get(name.decode().rstrip("."))
        if isinstance(value, Exception):
            raise value
        return value

    return lookup


def txtfunc(table: dict[str, list[bytes] | Exception]) -> Callable[[str], list[bytes]]:
    def lookup(name: str) -> list[bytes]:
        value = table.get(name.rstrip("."), [])
        if isinstance(value, Exception):
            raise value
        return value

    return lookup


DOWN = DnsTemporary("SERVFAIL")


def opendkim_sign(message: bytes, key: Path, domain: str, selector: str) -> bytes:
    """``message`` with the DKIM-Signature of OpenDKIM's own signer (opendkim-testmsg,
    Debian's opendkim-tools 2.11.0, which signs rsa-sha1, relaxed/simple).

    That opendkim-testmsg prints its output badly: the signature's last line repeats the
    tail of b= after the base64 padding (``...Fpg==tAQFpg==``) and the body is left out.
    The signature is OpenDKIM's all the same: we take its header, cut b= at the end of
    the base64 (a 2048-bit signature is 256 bytes, 344 characters ending ``==``) and put
    it on the original message."""
    done = subprocess.run(
        ["opendkim-testmsg", "-d", domain, "-k", str(key), "-s", selector],
        input=message,
        capture_output=True,
        check=True,
        timeout=30,
    )
    header = done.stdout.split(b"\nFrom:", 1)[0]  # the signature's lines, before ours
    assert header.startswith(b"DKIM-Signature:"), done.stdout
    tags, _, signature = header.rpartition(b"b=")
    end = signature.index(b"==") + 2
    return tags + b"b=" + signature[:end] + b"\n" + message
