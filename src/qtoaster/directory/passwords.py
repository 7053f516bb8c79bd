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

# argon2id with OWASP's first recommended setting (19 MiB, t=2, p=1): about 25 ms per hash
# on our machines where RFC 9106's 64 MiB/t=3/p=4 profile took 120 ms; POP3 logins and
# bulk user adds need the difference (docs/decisions/0003).  Run off the event loop.
_hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
_ARGON2 = "$argon2"


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
        if not password_hash.startswith(_ARGON2):
            # An imported crypt(3) hash (vpopmail): verified as is, rehashed on success.
            from qtoaster.directory import legacy

            return legacy.verify_legacy(password_hash, password)
        return _hasher.verify(password_hash, _raw(password))
    except (VerificationError, InvalidHashError):
        # VerifyMismatchError is a VerificationError; InvalidHashError: damaged row.
        return False


def needs_rehash(password_hash: str) -> bool:
    """True when the hash is not argon2id with the current parameters (an imported
    crypt(3) hash, or other argon2 parameters)."""
    if not password_hash.startswith(_ARGON2):
        from qtoaster.directory import legacy

        return legacy.is_legacy(password_hash)
    try:
        return _hasher.check_needs_rehash(password_hash)
    except InvalidHashError:
        return False
