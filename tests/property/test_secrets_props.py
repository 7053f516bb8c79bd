"""CRAM-MD5 contexts agree with hmac for any key and challenge; the verifiers and
SecretBox.open answer False / None on arbitrary input, never raise."""

from __future__ import annotations

import hashlib
import hmac
import os

from hypothesis import given, settings
from hypothesis import strategies as st

from qtoaster.directory.secrets import (
    SecretBox,
    apop_digest,
    cram_md5_contexts,
    cram_md5_digest,
    verify_apop,
    verify_cram_md5,
)

# Keys straddle the 64-byte block (longer keys are hashed first, RFC 2104 section 2);
# challenges straddle the 55/56-byte padding boundary and span several blocks.
KEYS = st.binary(max_size=150)
CHALLENGES = st.binary(max_size=200)
_BOX = SecretBox(os.urandom(32))


def _password(key: bytes) -> str:
    return key.decode("utf-8", "surrogateescape")  # encodes back to exactly ``key``


@settings(max_examples=300, deadline=None)
@given(KEYS, CHALLENGES)
def test_cram_md5_equals_hmac(key: bytes, challenge: bytes) -> None:
    expected = hmac.new(key, challenge, "md5").hexdigest()
    contexts = cram_md5_contexts(_password(key))
    assert cram_md5_digest(contexts, challenge) == expected
    assert verify_cram_md5(contexts, challenge, expected)


@settings(max_examples=200, deadline=None)
@given(KEYS, CHALLENGES, st.binary(min_size=16, max_size=16))
def test_other_digests_are_refused(key: bytes, challenge: bytes, other: bytes) -> None:
    expected = hmac.new(key, challenge, "md5").digest()
    contexts = cram_md5_contexts(_password(key))
    assert verify_cram_md5(contexts, challenge, other.hex()) == (other == expected)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80), CHALLENGES, st.text(max_size=40))
def test_verify_cram_md5_never_raises(contexts: str, challenge: bytes, response: str) -> None:
    assert verify_cram_md5(contexts, challenge, response) in (True, False)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60), st.text(max_size=60), st.text(max_size=40))
def test_apop_verify_never_raises_and_agrees(banner: str, secret: str, digest: str) -> None:
    assert verify_apop(banner, secret, digest) in (True, False)
    try:
        raw = (banner + secret).encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return  # a surrogate outside U+DC80-U+DCFF: no wire bytes can produce it
    assert apop_digest(banner, secret) == hashlib.md5(raw).hexdigest()
    assert verify_apop(banner, secret, apop_digest(banner, secret))


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_secretbox_round_trip(secret: str) -> None:
    try:
        secret.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return  # not a string the wire can produce (a surrogate outside U+DC80-U+DCFF)
    assert _BOX.open(_BOX.seal(secret)) == secret


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=80), st.text(max_size=80).map(lambda t: "v1:" + t)))
def test_secretbox_open_never_raises(token: str) -> None:
    assert _BOX.open(token) is None
