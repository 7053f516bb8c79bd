"""Password hashing for the directory: argon2id via argon2-cffi (DESIGN.md section 6).

Invariants: the directory stores only the PHC string this module returns, never the
password; :func:`verify` never raises for a wrong password or a damaged hash (it answers
False), so a corrupt row cannot turn into a server error during AUTH or POP3 login.
Passwords are ``str`` that may carry surrogate escapes (bytes from the wire, see
core.envelope); they are hashed as the original bytes.
"""

from __future__ import annotations

from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# argon2-cffi's defaults follow RFC 9106's second recommended option (argon2id, 64 MiB,
# t=3, p=4): about 50 ms per hash on our machines, run off the event loop (STYLE.md rule 5).
_hasher = PasswordHasher()


@cache
def _dummy_hash() -> str:
    """Verified against when a user is unknown or has no password, so that such a login
    takes as long as a real one and does not reveal which addresses exist."""
    return _hasher.hash(b"qtoaster-dummy-password")


def _raw(password: str) -> bytes:
    return password.encode("utf-8", "surrogateescape")


def hash_password(password: str) -> str:
    """The argon2id PHC string (``$argon2id$v=19$m=...``) for ``password``."""
    return _hasher.hash(_raw(password))


def verify(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches ``password_hash``; None (no password) never matches."""
    try:
        if password_hash is None:
            _hasher.verify(_dummy_hash(), _raw(password))
            return False
        return _hasher.verify(password_hash, _raw(password))
    except (VerificationError, InvalidHashError):
        # VerifyMismatchError is a VerificationError; InvalidHashError: damaged row.
        return False


def needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with weaker parameters than the current ones."""
    try:
        return _hasher.check_needs_rehash(password_hash)
    except InvalidHashError:
        return False
