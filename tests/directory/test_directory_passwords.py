"""argon2 hashing: the stored form, wrong passwords, damaged hashes, wire bytes."""

from __future__ import annotations

from argon2 import PasswordHasher

from qtoaster.directory import passwords


def test_hash_is_argon2id_and_verifies() -> None:
    stored = passwords.hash_password("correct horse")
    assert stored.startswith("$argon2id$")
    assert "correct horse" not in stored
    assert passwords.verify(stored, "correct horse")
    assert not passwords.verify(stored, "Correct horse")
    assert not passwords.needs_rehash(stored)


def test_no_password_and_damaged_hash_never_match() -> None:
    assert not passwords.verify(None, "")
    assert not passwords.verify("not a hash", "x")
    assert not passwords.verify("$argon2id$v=19$m=garbage", "x")
    assert not passwords.needs_rehash("not a hash")


def test_surrogate_escaped_bytes_round_trip() -> None:
    raw = b"p\xe4ss"  # Latin-1 bytes from the wire, not UTF-8
    password = raw.decode("utf-8", "surrogateescape")
    stored = passwords.hash_password(password)
    assert passwords.verify(stored, password)
    assert PasswordHasher().verify(stored, raw)


def test_weaker_parameters_need_rehash() -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("pw")
    assert passwords.verify(weak, "pw")
    assert passwords.needs_rehash(weak)


def test_libsodium_and_argon2_cffi_read_each_others_hashes() -> None:
    from argon2 import PasswordHasher

    from qtoaster.directory import passwords as pw

    ours = pw.hash_password("s3cret")
    assert ours.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert PasswordHasher().verify(ours, b"s3cret")
    assert not pw.needs_rehash(ours)
    # A hash with 4 lanes (argon2-cffi's default, the foundation's first hashes) is not
    # libsodium's: argon2-cffi verifies it, and it is marked for rehashing.
    four = PasswordHasher().hash(b"s3cret")
    assert pw.verify(four, "s3cret") and not pw.verify(four, "wrong")
    assert pw.needs_rehash(four)
    assert not pw.verify("$argon2id$v=19$m=19456,t=2,p=1$garbage$garbage", "s3cret")
