"""DKIM signing: canonicalization, the RFC 8463 example, and our signatures verified by
dkimpy (an independent implementation)."""

from __future__ import annotations

import base64
import hashlib
import time

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from qtoaster.mailauth.dkimsign import (
    ED25519_SHA256,
    RSA_SHA256,
    RelaxedBody,
    Signer,
    Unsignable,
    header_data,
    header_names,
    relaxed_header,
    sign_data,
    sign_message,
    split_header,
)

# RFC 8463 Appendix A: the keys (A.1, A.2) and the signed message (A.3).
RFC_ED_SEED = "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A="
RFC_ED_PUBLIC = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
RFC_RSA = b"""-----BEGIN RSA PRIVATE KEY-----
MIICXQIBAAKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQi
Y/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqM
KrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB
AoGAH0cxOhFZDgzXWhDhnAJDw5s4roOXN4OhjiXa8W7Y3rhX3FJqmJSPuC8N9vQm
6SVbaLAE4SG5mLMueHlh4KXffEpuLEiNp9Ss3O4YfLiQpbRqE7Tm5SxKjvvQoZZe
zHorimOaChRL2it47iuWxzxSiRMv4c+j70GiWdxXnxe4UoECQQDzJB/0U58W7RZy
6enGVj2kWF732CoWFZWzi1FicudrBFoy63QwcowpoCazKtvZGMNlPWnC7x/6o8Gc
uSe0ga2xAkEA8C7PipPm1/1fTRQvj1o/dDmZp243044ZNyxjg+/OPN0oWCbXIGxy
WvmZbXriOWoSALJTjExEgraHEgnXssuk7QJBALl5ICsYMu6hMxO73gnfNayNgPxd
WFV6Z7ULnKyV7HSVYF0hgYOHjeYe9gaMtiJYoo0zGN+L3AAtNP9huqkWlzECQE1a
licIeVlo1e+qJ6Mgqr0Q7Aa7falZ448ccbSFYEPD6oFxiOl9Y9se9iYHZKKfIcst
o7DUw1/hz2Ck4N5JrgUCQQCyKveNvjzkkd8HjYs0SwM0fPjK16//5qDZ2UiDGnOe
uEzxBDAr518Z8VFbR41in3W4Y3yCDgQlLlcETrS+zYcL
-----END RSA PRIVATE KEY-----
"""
RFC_ED_SIGNATURE = (
    b"DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\n"
    b" d=football.example.com; i=@football.example.com;\n"
    b" q=dns/txt; s=brisbane; t=1528637909; h=from : to :\n"
    b" subject : date : message-id : from : subject : date;\n"
    b" bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\n"
    b" b=/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11Bus\n"
    b" Fa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==\n"
)
RFC_RSA_SIGNATURE = (
    b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;\n"
    b" d=football.example.com; i=@football.example.com;\n"
    b" q=dns/txt; s=test; t=1528637909; h=from : to : subject :\n"
    b" date : message-id : from : subject : date;\n"
    b" bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\n"
    b" b=F45dVWDfMbQDGHJFlXUNB2HKfbCeLRyhDXgFpEL8GwpsRe0IeIixNTe3\n"
    b" DhCVlUrSjV4BwcVcOF6+FF3Zo9Rpo1tFOeS9mPYQTnGdaSGsgeefOsk2Jz\n"
    b" dA+L10TeYt9BgDfQNZtKdN1WO//KgIqXP7OdEFE4LjFYNcUxZQ4FADY+8=\n"
)
RFC_MESSAGE = (
    b"From: Joe SixPack <joe@football.example.com>\n"
    b"To: Suzie Q <suzie@shopping.example.net>\n"
    b"Subject: Is dinner ready?\n"
    b"Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\n"
    b"Message-ID: <20030712040037.46341.5F8J@football.example.com>\n"
    b"\n"
    b"Hi.\n"
    b"\n"
    b"We lost the game.  Are you hungry yet?\n"
    b"\n"
    b"Joe.\n"
)
RFC_NAMES = ["from", "to", "subject", "date", "message-id", "from", "subject", "date"]


def _rfc_signer(field: bytes) -> tuple[Signer, bytes, bytes]:
    """The signer of one of the RFC's signatures, its b= and the field with b= emptied."""
    head, _, b = field.partition(b" b=")
    published = b"".join(b.split())
    if b"ed25519" in field:
        key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey = (
            ed25519.Ed25519PrivateKey.from_private_bytes(base64.b64decode(RFC_ED_SEED))
        )
        signer = Signer("football.example.com", "brisbane", ED25519_SHA256, key)
    else:
        loaded = serialization.load_pem_private_key(RFC_RSA, None)
        assert isinstance(loaded, rsa.RSAPrivateKey)
        signer = Signer("football.example.com", "test", RSA_SHA256, loaded)
    return signer, published, head + b" b="


def test_rfc8463_body_hash() -> None:
    _, offset = split_header(RFC_MESSAGE)
    body = RelaxedBody()
    body.feed(RFC_MESSAGE[offset:])
    assert base64.b64encode(body.digest()) == b"2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8="


@pytest.mark.parametrize("field", [RFC_ED_SIGNATURE, RFC_RSA_SIGNATURE], ids=["ed25519", "rsa"])
def test_rfc8463_signatures_reproduced(field: bytes) -> None:
    """Both algorithms are deterministic: the same key over the same canonical data gives
    the RFC's very b= value."""
    signer, published, unsigned = _rfc_signer(field)
    fields, _ = split_header(RFC_MESSAGE)
    name, _, value = unsigned.partition(b":")
    data = header_data(fields, RFC_NAMES) + relaxed_header(name, value)
    assert base64.b64encode(sign_data(signer, data)) == published


def test_rfc8463_public_key_is_the_seeds() -> None:
    key = ed25519.Ed25519PrivateKey.from_private_bytes(base64.b64decode(RFC_ED_SEED))
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert base64.b64encode(raw).decode() == RFC_ED_PUBLIC


# -- canonicalization ------------------------------------------------------------------


def _body(*chunks: bytes) -> bytes:
    body = RelaxedBody()
    for chunk in chunks:
        body.feed(chunk)
    return body.digest()


@pytest.mark.parametrize(
    ("stored", "canonical"),
    [
        (b"", b""),
        (b"\n\n\n", b""),
        (b" a  \t b \n\n\n", b" a b\r\n"),
        (b"no break", b"no break\r\n"),
        (b"a\n\n b\n \n\t\n", b"a\r\n\r\n b\r\n"),
        (b"cr\r\nx\n", b"cr\r\r\nx\r\n"),  # a stored CR is data, as the SMTP client sends it
    ],
)
def test_relaxed_body(stored: bytes, canonical: bytes) -> None:
    assert _body(stored) == hashlib.sha256(canonical).digest()
    # Any split of the input gives the same digest.
    for cut in range(len(stored) + 1):
        assert _body(stored[:cut], stored[cut:]) == hashlib.sha256(canonical).digest()


def test_relaxed_header() -> None:
    assert relaxed_header(b"SubJect ", b"  a \t b  \n\t c  ") == b"subject:a b c"


def test_header_selection_bottom_up_and_oversigned() -> None:
    fields, _ = split_header(b"From: a\nTo: x\nTo: y\n  z\nX-Other: 1\n\nbody\n")
    names = header_names(fields)
    assert names.count("from") == 2 and names.count("to") == 3 and names.count("cc") == 1
    assert "x-other" not in names and "in-reply-to" not in names
    assert header_data(fields, ["to", "to", "to"]) == b"to:y z\r\nto:x\r\n"


def test_unparsable_header_is_unsignable() -> None:
    with pytest.raises(Unsignable):
        split_header(b"From: a\nnot a header\n\nbody\n")
    with pytest.raises(Unsignable):
        split_header(b" continuation first\n\nbody\n")


# -- verified by dkimpy ----------------------------------------------------------------

MESSAGE = (
    b"Received: from x by y; Mon, 7 Dec 2026 03:00:00 +0000\n"
    b"From: Ann <ann@example.org>\n"
    b"To: bob@example.net,\n  carol@example.net\n"
    b"Subject:   hello   there  \n"
    b"Date: Mon, 7 Dec 2026 03:00:00 +0000\n"
    b"Message-ID: <1@example.org>\n"
    b"MIME-Version: 1.0\n"
    b"Content-Type: text/plain; charset=utf-8\n"
    b"\n"
    b"Hello,  world \t\n"
    b".a line with a dot\n"
    b"\xc3\xa9t\xc3\xa9\n"
    b"\n\n"
)


def _keys() -> tuple[list[Signer], dict[bytes, bytes]]:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    rsa_pub = rsa_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    ed_pub = ed_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    records = {
        b"r1._domainkey.example.org.": b"v=DKIM1; k=rsa; p=" + base64.b64encode(rsa_pub),
        b"e1._domainkey.example.org.": b"v=DKIM1; k=ed25519; p=" + base64.b64encode(ed_pub),
    }
    signers = [
        Signer("example.org", "r1", RSA_SHA256, rsa_key),
        Signer("example.org", "e1", ED25519_SHA256, ed_key),
    ]
    return signers, records


def _verify_all(message: bytes, records: dict[bytes, bytes]) -> list[bool]:
    """dkimpy's verdict on every DKIM-Signature of ``message`` (LF ends made CRLF)."""
    wire = message.replace(b"\n", b"\r\n")
    d = dkim.DKIM(wire)
    count = sum(1 for name, _ in d.headers if name.lower() == b"dkim-signature")
    verdicts = []
    for i in range(count):
        try:
            verdicts.append(bool(d.verify(idx=i, dnsfunc=lambda n, timeout=5: records.get(n))))
        except dkim.DKIMException:  # a body hash mismatch is raised, not returned
            verdicts.append(False)
    return verdicts


def test_signatures_verify_with_dkimpy() -> None:
    signers, records = _keys()
    # dkimpy checks x= against the real clock: sign "now" (a fixed time once expired).
    now = int(time.time())
    head = sign_message(MESSAGE, signers, now=now, expiry=3600)
    assert head.count(b"DKIM-Signature:") == 2
    assert all(len(line) <= 78 for line in head.split(b"\n"))
    assert b"x=%d;" % (now + 3600) in head and b"a=ed25519-sha256;" in head
    assert _verify_all(head + MESSAGE, records) == [True, True]
    # Streamed in small chunks (the header section in the first): the same signatures.
    split = MESSAGE.index(b"\n\n") + 2
    chunks = [MESSAGE[:split]] + [MESSAGE[i : i + 7] for i in range(split, len(MESSAGE), 7)]
    assert sign_message(chunks, signers, now=now, expiry=3600) == head


def test_added_headers_break_oversigned_ones() -> None:
    signers, records = _keys()
    head = sign_message(MESSAGE, signers, now=1796612400)
    signed = head + MESSAGE
    assert _verify_all(signed.replace(b"\nTo: ", b"\nCc: eve@evil.example\nTo: "), records) == [
        False,
        False,
    ]
    assert _verify_all(
        signed.replace(b"\nFrom: ", b"\nFrom: eve@evil.example\nFrom: "), records
    ) == [
        False,
        False,
    ]
    # What a relay does (a trace field on top, refolding) keeps them valid.
    relayed = b"Received: by relay; Mon, 7 Dec 2026 03:01:00 +0000\n" + signed.replace(
        b"Subject:   hello", b"Subject:\n\t  hello"
    )
    assert _verify_all(relayed, records) == [True, True]
    assert _verify_all(signed.replace(b"Hello,", b"Hello!"), records) == [False, False]


def test_no_signers_no_head() -> None:
    assert sign_message(MESSAGE, [], now=1) == b""
