"""CRAM-MD5 contexts, APOP digests and the AES-GCM secret box: published vectors,
agreement with hmac/hashlib, Dovecot's stored form, junk input, key-file handling."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat
from pathlib import Path

import pytest

from qtoaster.directory.secrets import (
    SecretBox,
    apop_digest,
    cram_md5_contexts,
    cram_md5_digest,
    verify_apop,
    verify_cram_md5,
)

RFC2195_CHALLENGE = b"<1896.697170952@postoffice.reston.mci.net>"
RFC2195_DIGEST = "b913a602c7eda7a495b4e6e7334d3890"

# Dovecot `doveadm pw -s CRAM-MD5 -p password`, as recorded in krhitoshi/postfix_admin
# spec/factories.rb and spec/spec_helper.rb ("# password: \"password\"").
DOVECOT_PASSWORD = "9186d855e11eba527a7a52ca82b313e180d62234f0acc9051b527243d41e2740"
# The same repository's CRAM_MD5_NEW_PASS (spec/spec_helper.rb), made for "new_password".
DOVECOT_NEW_PASSWORD = "820de4c70957274d41111c5fbcae4c87240c9f047fc56f3e720f103571be6cbc"

KEYS = [
    "",
    "a",
    "tanstaaftanstaaf",
    "x" * 63,
    "y" * 64,
    "z" * 65,
    "long " * 40,
    "pässwörd",
    "密码🔑",
    b"p\xe4ss\xff".decode("utf-8", "surrogateescape"),  # Latin-1 bytes off the wire
]
CHALLENGES = [b"", b"c", RFC2195_CHALLENGE, b"\x00" * 55, b"q" * 56, b"r" * 64, b"s" * 300]


def _hmac_hex(password: str, challenge: bytes) -> str:
    key = password.encode("utf-8", "surrogateescape")
    return hmac.new(key, challenge, "md5").hexdigest()


def test_rfc2195_example() -> None:
    contexts = cram_md5_contexts("tanstaaftanstaaf")
    assert cram_md5_digest(contexts, RFC2195_CHALLENGE) == RFC2195_DIGEST
    assert verify_cram_md5(contexts, RFC2195_CHALLENGE, RFC2195_DIGEST)
    assert verify_cram_md5(contexts, RFC2195_CHALLENGE, RFC2195_DIGEST.upper())
    assert not verify_cram_md5(contexts, RFC2195_CHALLENGE + b" ", RFC2195_DIGEST)
    assert not verify_cram_md5(cram_md5_contexts("tanstaaf"), RFC2195_CHALLENGE, RFC2195_DIGEST)


def test_dovecot_stored_values() -> None:
    assert cram_md5_contexts("password") == DOVECOT_PASSWORD
    assert cram_md5_contexts("new_password") == DOVECOT_NEW_PASSWORD


def test_dovecot_value_with_scheme_prefix_verifies() -> None:
    digest = _hmac_hex("password", RFC2195_CHALLENGE)
    for stored in (f"{{CRAM-MD5}}{DOVECOT_PASSWORD}", f"{{cram-md5}}{DOVECOT_PASSWORD.upper()}"):
        assert verify_cram_md5(stored, RFC2195_CHALLENGE, digest)
        assert cram_md5_digest(stored, RFC2195_CHALLENGE) == digest


@pytest.mark.parametrize("password", KEYS)
def test_matches_hmac_for_many_keys_and_challenges(password: str) -> None:
    contexts = cram_md5_contexts(password)
    assert len(contexts) == 64
    assert contexts == contexts.lower()
    for challenge in CHALLENGES:
        expected = _hmac_hex(password, challenge)
        assert cram_md5_digest(contexts, challenge) == expected
        assert verify_cram_md5(contexts, challenge, expected)


def test_contexts_do_not_contain_the_password() -> None:
    contexts = cram_md5_contexts("tanstaaftanstaaf")
    assert "tanstaaf" not in contexts
    assert b"tanstaaf".hex() not in contexts


@pytest.mark.parametrize(
    "response",
    ["", "b913", RFC2195_DIGEST + "0", "g" * 32, " " + RFC2195_DIGEST[1:], "é" * 32, "\x00" * 32],
)
def test_junk_responses_are_false(response: str) -> None:
    contexts = cram_md5_contexts("tanstaaftanstaaf")
    assert not verify_cram_md5(contexts, RFC2195_CHALLENGE, response)


@pytest.mark.parametrize(
    "contexts", ["", "{CRAM-MD5}", "0" * 63, "z" * 64, "é" * 64, DOVECOT_PASSWORD + "00", "{X}"]
)
def test_junk_contexts_are_false_or_value_error(contexts: str) -> None:
    assert not verify_cram_md5(contexts, RFC2195_CHALLENGE, RFC2195_DIGEST)
    with pytest.raises(ValueError):
        cram_md5_digest(contexts, RFC2195_CHALLENGE)


def test_apop_rfc1939_example() -> None:
    banner = "<1896.697170952@dbc.mtview.ca.us>"
    digest = "c4c9334bac560ecc979e58001b3e22fb"
    assert apop_digest(banner, "tanstaaf") == digest
    assert verify_apop(banner, "tanstaaf", digest)
    assert verify_apop(banner, "tanstaaf", digest.upper())
    assert not verify_apop(banner, "tanstaaF", digest)
    for junk in ("", digest[:-1], "é" * 32, "x" * 32):
        assert not verify_apop(banner, "tanstaaf", junk)


def test_apop_uses_wire_bytes() -> None:
    secret = b"p\xe4ss".decode("utf-8", "surrogateescape")
    assert apop_digest("<1.2@h>", secret) == hashlib.md5(b"<1.2@h>p\xe4ss").hexdigest()


# --- SecretBox ---------------------------------------------------------------


def test_create_then_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    box = SecretBox.load(path, create=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.stat().st_size == 32
    assert [p.name for p in tmp_path.iterdir()] == ["secret.key"]  # no temporary left
    for secret in ["tanstaaf", "", "密码🔑", b"p\xe4ss".decode("utf-8", "surrogateescape")]:
        token = box.seal(secret)
        assert token.startswith("v1:")
        if secret:
            assert secret.encode("utf-8", "surrogateescape") not in token.encode()
        assert box.open(token) == secret
        assert SecretBox.load(path).open(token) == secret  # the key persisted
    assert box.seal("same") != box.seal("same")  # fresh nonce each time


def test_create_keeps_an_existing_key(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    token = SecretBox.load(path, create=True).seal("s")
    assert SecretBox.load(path, create=True).open(token) == "s"


def test_missing_key_without_create(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        SecretBox.load(tmp_path / "absent.key")


def test_wrong_key_gives_none(tmp_path: Path) -> None:
    token = SecretBox.load(tmp_path / "a.key", create=True).seal("tanstaaf")
    assert SecretBox.load(tmp_path / "b.key", create=True).open(token) is None


def test_tampered_or_junk_tokens_give_none(tmp_path: Path) -> None:
    box = SecretBox.load(tmp_path / "k", create=True)
    token = box.seal("tanstaaf")
    raw = bytearray(base64.b64decode(token[3:]))
    for index in (0, 12, len(raw) - 1):  # nonce, ciphertext, tag
        flipped = bytearray(raw)
        flipped[index] ^= 1
        assert box.open("v1:" + base64.b64encode(bytes(flipped)).decode()) is None
    junk = ["", "v1:", "v2:" + token[3:], token[3:], token + "!", "v1:é", "v1:" + "A" * 36]
    junk += ["v1:" + base64.b64encode(bytes(raw[:-1])).decode(), token[:-4]]
    for bad in junk:
        assert box.open(bad) is None


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o644, 0o700 | 0o007])
def test_key_file_open_to_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "k"
    SecretBox.load(path, create=True)
    os.chmod(path, mode)
    with pytest.raises(ValueError, match="chmod 600"):
        SecretBox.load(path)


def test_key_file_wrong_size_or_kind_is_refused(tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.write_bytes(b"x" * 31)
    short.chmod(0o600)
    with pytest.raises(ValueError, match="32 bytes"):
        SecretBox.load(short)
    with pytest.raises(ValueError, match="not a regular file"):
        SecretBox.load(tmp_path)
    link = tmp_path / "link"
    link.symlink_to(short)
    with pytest.raises(OSError):
        SecretBox.load(link)  # O_NOFOLLOW: a symlink is never followed to a key


def test_key_is_not_in_repr() -> None:
    key = os.urandom(32)
    assert key.hex() not in repr(SecretBox(key))
    with pytest.raises(ValueError):
        SecretBox(b"short")


def test_unencodable_strings_do_not_raise_in_verifiers() -> None:
    lone = "\ud800"  # a surrogate no wire bytes decode to (only U+DC80-U+DCFF can appear)
    assert not verify_apop("<1.2@h>", lone, "0" * 32)
    assert not verify_cram_md5(lone * 64, b"c", "0" * 32)
