"""ARC sealing (mailauth/arcseal.py) checked by dkimpy's arc_verify."""

from __future__ import annotations

import base64

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from qtoaster.mailauth.arcseal import arc_seal

MESSAGE = (
    b"Authentication-Results: mx.example.net; spf=pass smtp.mailfrom=example.org;\n"
    b" dkim=none\n"
    b"Authentication-Results: other.example; spf=fail smtp.mailfrom=example.org\n"
    b"From: Alice <alice@example.org>\n"
    b"To: bob@example.net\n"
    b"Subject: hello\n"
    b"Date: Mon, 7 Dec 2026 03:00:00 +0000\n"
    b"Message-ID: <1@example.org>\n"
    b"\n"
    b"Hello Bob.\n"
    b"Second line.\n"
)


def _key() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


@pytest.fixture(scope="module")
def keys() -> dict[bytes, bytes]:
    first, first_txt = _key()
    second, second_txt = _key()
    return {
        b"pem1": first,
        b"pem2": second,
        b"s1._domainkey.example.net.": first_txt,
        b"s2._domainkey.forward.example.": second_txt,
    }


def _dns(keys: dict[bytes, bytes]):  # type: ignore[no-untyped-def]
    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return keys.get(name)

    return lookup


def _seal(message: bytes, keys: dict[bytes, bytes], n: int) -> bytes:
    domain, selector = (("example.net", "s1"), ("forward.example", "s2"))[n - 1]
    authserv = ("mx.example.net", "mx.forward.example")[n - 1]
    sealed = arc_seal(
        message,
        domain=domain,
        selector=selector,
        private_key_pem=keys[b"pem%d" % n],
        authserv_id=authserv,
        timestamp=1_700_000_000,
        dnsfunc=_dns(keys),
    )
    return sealed + message


def test_first_seal_verifies(keys: dict[bytes, bytes]) -> None:
    sealed = _seal(MESSAGE, keys, 1)
    lines = sealed.split(b"\n")
    assert lines[0].startswith(b"ARC-Seal: i=1; cv=none; a=rsa-sha256; d=example.net; s=s1;")
    assert b"\r" not in sealed[: -len(MESSAGE)]
    aar = [line for line in sealed.split(b"\n") if b"ARC-Authentication-Results" in line]
    assert len(aar) == 1 and aar[0].startswith(b"ARC-Authentication-Results: i=1; mx.example.net")
    assert b"spf=pass" in sealed[: -len(MESSAGE)]
    assert b"spf=fail" not in sealed[: -len(MESSAGE)]  # other.example's results are not ours
    cv, _results, reason = dkim.arc_verify(sealed, dnsfunc=_dns(keys))
    assert cv == dkim.CV_Pass, reason
    # CRLF on the wire verifies the same
    cv, _, reason = dkim.arc_verify(sealed.replace(b"\n", b"\r\n"), dnsfunc=_dns(keys))
    assert cv == dkim.CV_Pass, reason


def test_chain_of_two_seals(keys: dict[bytes, bytes]) -> None:
    once = _seal(MESSAGE, keys, 1)
    hop = b"Authentication-Results: mx.forward.example; dkim=none\n" + once
    twice = _seal(hop, keys, 2)
    assert twice.startswith(b"ARC-Seal: i=2; cv=pass;")
    assert b"arc=pass" in twice.split(b"ARC-Seal: i=1")[0]
    cv, results, reason = dkim.arc_verify(twice, dnsfunc=_dns(keys))
    assert cv == dkim.CV_Pass, reason
    assert [r["instance"] for r in results] == [2, 1]


def test_tampered_message_fails(keys: dict[bytes, bytes]) -> None:
    sealed = _seal(MESSAGE, keys, 1)
    tampered = sealed.replace(b"Hello Bob.", b"Hello Eve.")
    cv, _, _ = dkim.arc_verify(tampered, dnsfunc=_dns(keys))
    assert cv == dkim.CV_Fail
    # sealing on top of a broken chain says so: cv=fail
    resealed = _seal(b"Authentication-Results: mx.forward.example; none\n" + tampered, keys, 2)
    assert resealed.startswith(b"ARC-Seal: i=2; cv=fail;")


def test_no_results_header_seals_with_none(keys: dict[bytes, bytes]) -> None:
    bare = MESSAGE.split(b"From:", 1)[1]
    sealed = _seal(b"From:" + bare, keys, 1)
    cv, _, reason = dkim.arc_verify(sealed, dnsfunc=_dns(keys))
    assert cv == dkim.CV_Pass, reason


def test_not_an_rsa_key(keys: dict[bytes, bytes]) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError, match="RSA"):
        arc_seal(MESSAGE, domain="d", selector="s", private_key_pem=pem, authserv_id="x")
