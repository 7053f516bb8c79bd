"""crypt(3) hashes brought over from vpopmail: recognised, verified, never raising."""

from __future__ import annotations

import pytest
from passlib.hash import des_crypt, md5_crypt, sha256_crypt, sha512_crypt

from qtoaster.directory.legacy import is_legacy, verify_legacy


@pytest.mark.parametrize(
    "handler",
    [md5_crypt, sha256_crypt.using(rounds=5000), sha512_crypt.using(rounds=5000), des_crypt],
)
def test_forms(handler: object) -> None:
    stored = handler.hash("pässword")  # type: ignore[attr-defined]
    assert is_legacy(stored)
    assert verify_legacy(stored, "pässword")
    assert not verify_legacy(stored, "password")


@pytest.mark.parametrize(
    "stored",
    ["", "plain", "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA", "$1$", "$6$x$", "*", "!!"],
)
def test_not_legacy_or_damaged(stored: str) -> None:
    assert not verify_legacy(stored, "x")


def test_argon2_is_not_legacy() -> None:
    assert not is_legacy("$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA")


def test_bcrypt_without_backend_is_false_not_an_error() -> None:
    stored = "$2y$10$" + "a" * 21 + "e" + "a" * 31
    assert verify_legacy(stored, "x") is False


def test_surrogate_escaped_password() -> None:
    stored = md5_crypt.hash(b"caf\xe9")
    assert verify_legacy(stored, b"caf\xe9".decode("utf-8", "surrogateescape"))
