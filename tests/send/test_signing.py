"""The send role's DKIM decision and signing (send/signing.py), the origin predicate
(queue/origin.py), and the head's way to the remote process (Body, the channel)."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from pathlib import Path

import dkim
import pytest

from qtoaster.core.clock import FakeClock
from qtoaster.core.envelope import Envelope
from qtoaster.mailauth import dkimkeys
from qtoaster.queue.origin import smtp_origin, trusted
from qtoaster.queue.store import QueuedMessage, QueueStore, commit_message
from qtoaster.remote.body import Body, body_lacks_final_lf, chunks, has_eight_bit
from qtoaster.remote.channel import Decoder, Deliver, Malformed, encode, parse
from qtoaster.send.signing import OutboundSigner, from_domain

NOW = 1_796_612_400.0
ENV = Envelope("ann@example.org", ("bob@far.example",))
MESSAGE = (
    b"Received: (qmail 1 invoked by uid 0); 7 Dec 2026 03:00:00 -0000\n"
    b"From: Ann <ann@Example.ORG>\n"
    b"To: bob@far.example\n"
    b"Subject: hi\n"
    b"\n"
    b"body\n"
)


def test_trusted_origins() -> None:
    assert smtp_origin("10.0.0.1", relay=False) == "smtp 10.0.0.1"
    assert smtp_origin("10.0.0.1", relay=True) == "smtp 10.0.0.1 relay"
    assert smtp_origin("::1", True, requiretls=True) == "smtp ::1 relay requiretls"
    trusted_origins = ("smtp 10.0.0.1 relay", "smtp ::1 relay requiretls", "inject uid 0")
    for origin in (*trusted_origins, "sendmail uid 1000", "bounce", "vacation"):
        assert trusted(origin), origin
    for origin in ("smtp 10.0.0.1", "forward", "", "smtp relay", "smtp ::1 requiretls"):
        assert not trusted(origin), origin


def test_from_domain() -> None:
    assert from_domain(MESSAGE) == "example.org"
    assert (
        from_domain(b"From: =?utf-8?q?A?= <a@b\xc3\xbccher.example>\n\n") == "xn--bcher-kva.example"
    )
    with pytest.raises(dkim_unsignable()):
        from_domain(b"From: a@x.example, b@y.example\n\n")
    with pytest.raises(dkim_unsignable()):
        from_domain(b"From: a@x.example\nFrom: b@x.example\n\n")
    with pytest.raises(dkim_unsignable()):
        from_domain(b"To: a@x.example\n\n")


def dkim_unsignable() -> type[Exception]:
    from qtoaster.mailauth.dkimsign import Unsignable

    return Unsignable


@pytest.fixture
def home(tmp_path: Path) -> Path:
    QueueStore.create(tmp_path / "queue")
    store = tmp_path / "dkim"
    for algorithm in ("rsa", "ed25519"):
        key = dkimkeys.generate(store, "example.org", algorithm, now=NOW)
        dkimkeys.set_state(store, key, "active", now=NOW)
    dkimkeys.generate(store, "example.org", "rsa", selector="later", now=NOW)  # pending
    return tmp_path


def queued(home: Path, origin: str, message: bytes = MESSAGE) -> QueuedMessage:
    store = QueueStore(home / "queue", fsync=False, clock=FakeClock(NOW))
    return store.load(commit_message(store, ENV, origin, [message]))


def records(home: Path) -> dict[bytes, bytes]:
    return {
        f"{k.record_name()}.".encode(): k.txt().encode()
        for k in dkimkeys.load_keys(home / "dkim", "example.org")
    }


def verify_all(signed: bytes, found: dict[bytes, bytes]) -> list[bool]:
    d = dkim.DKIM(signed.replace(b"\n", b"\r\n"))
    count = sum(1 for name, _ in d.headers if name.lower() == b"dkim-signature")
    return [bool(d.verify(idx=i, dnsfunc=lambda n, timeout=5: found.get(n))) for i in range(count)]


def test_trusted_message_signed_with_active_keys(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    signer = OutboundSigner.load(home, FakeClock(NOW), sign=True, expiry=0)
    message = queued(home, "smtp 192.0.2.1 relay")
    with caplog.at_level(logging.INFO, "qtoaster.send"):
        head = signer.head(message)
    assert head.count(b"DKIM-Signature:") == 2  # the pending key does not sign
    assert b" s=later;" not in head
    assert verify_all(head + MESSAGE, records(home)) == [True, True]
    assert f"dkim signed {message.qid} d=example.org s=" in caplog.text
    # The same through the signing threads.
    assert asyncio.run(signer.head_async(message)) == head
    signer.shutdown()


def test_not_signed(home: Path, caplog: pytest.LogCaptureFixture) -> None:
    signer = OutboundSigner.load(home, FakeClock(NOW), sign=True, expiry=0)
    # An untrusted client, a forward: nothing.
    assert signer.head(queued(home, "smtp 192.0.2.1")) == b""
    assert signer.head(queued(home, "forward")) == b""
    # A From domain without keys (an alias domain has its own, or none): nothing.
    other = MESSAGE.replace(b"ann@Example.ORG", b"ann@alias.example")
    assert signer.head(queued(home, "inject uid 0", other)) == b""
    # Two From addresses: unsigned, and the reason logged.
    two = MESSAGE.replace(b"<ann@Example.ORG>", b"<ann@example.org>, eve@example.org")
    with caplog.at_level(logging.WARNING, "qtoaster.send"):
        assert signer.head(queued(home, "bounce", two)) == b""
    assert "sent unsigned: 2 From addresses" in caplog.text
    # [dkim] sign = false: nothing at all.
    off = OutboundSigner.load(home, FakeClock(NOW), sign=False, expiry=0)
    assert off.head(queued(home, "inject uid 0")) == b""
    signer.shutdown()
    off.shutdown()


def test_unreadable_key_signs_nothing_for_its_domain(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    active = [k for k in dkimkeys.load_keys(home / "dkim", "example.org") if k.state == "active"]
    (home / "dkim" / "example.org" / f"{active[0].selector}.pem").write_bytes(b"junk")
    with caplog.at_level(logging.ERROR, "qtoaster.send"):
        signer = OutboundSigner.load(home, FakeClock(NOW), sign=True, expiry=0)
    assert "dkim not signing for example.org" in caplog.text
    assert signer.head(queued(home, "inject uid 0")) == b""
    signer.shutdown()


def test_body_head_counts(tmp_path: Path) -> None:
    path = tmp_path / "m"
    path.write_bytes(b"XXbody\n")
    fd = os.open(path, os.O_RDONLY)
    try:
        body = Body(fd, 2, 5, b"DKIM-Signature: \xe9\n")
        assert body.length == 5 + 18
        assert b"".join(chunks(body)) == b"DKIM-Signature: \xe9\nbody\n"
        assert has_eight_bit(body)
        assert not body_lacks_final_lf(body)
        assert not has_eight_bit(Body(fd, 2, 5, b"DKIM-Signature: x\n"))
    finally:
        os.close(fd)


def test_channel_carries_the_head() -> None:
    plain = Deliver(1, 2, 3, "a@b", ("c@d",), "d")
    signed = Deliver(1, 2, 3, "a@b", ("c@d",), "d", b"DKIM-Signature: v=1\n")
    assert b'"head"' not in encode(plain)  # no head: the frame is as before
    assert Decoder().feed(encode(plain) + encode(signed)) == [plain, signed]
    payload = encode(signed)[4:].replace(base64.b64encode(signed.head), b"!!")
    assert parse(payload) == Malformed("deliver: bad field head")


def test_forward_sealed_with_arc_by_the_forwarding_domain(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A forward whose (SRS) sender is in a domain with an active RSA key leaves with an ARC
    set that copies our Authentication-Results, and the chain verifies (dkimpy)."""
    found = records(home)
    signer = OutboundSigner.load(
        home,
        FakeClock(NOW),
        sign=True,
        expiry=0,
        authserv_id="mx.example.org",
        dnsfunc=lambda name, timeout=5: found.get(name),
    )
    forwarded = (
        b"Delivered-To: bob@example.org\n"
        b"Authentication-Results: mx.example.org; spf=pass smtp.mailfrom=x@sender.example\n"
        + MESSAGE.replace(b"ann@Example.ORG", b"x@sender.example")
    )
    store = QueueStore(home / "queue", fsync=False, clock=FakeClock(NOW))
    envelope = Envelope("SRS0=abcd=TT=sender.example=x@example.org", ("carol@far.example",))
    message = store.load(commit_message(store, envelope, "forward", [forwarded]))
    with caplog.at_level(logging.INFO, "qtoaster.send"):
        head = signer.head(message)
    assert head.startswith(b"ARC-Seal: i=1;") and b"ARC-Authentication-Results: i=1;" in head
    assert b"spf=pass" in head and b"cv=none" in head
    assert f"dkim arc: sealed {message.qid} d=example.org" in caplog.text
    sealed = (head + forwarded).replace(b"\n", b"\r\n")
    cv, _, reason = dkim.arc_verify(sealed, dnsfunc=lambda name, timeout=5: found.get(name))
    assert cv == dkim.CV_Pass, reason
    # A forward from a domain without keys goes unsealed; so does one without authserv-id.
    other = Envelope("x@sender.example", ("carol@far.example",))
    assert signer.head(store.load(commit_message(store, other, "forward", [forwarded]))) == b""
    signer.shutdown()
