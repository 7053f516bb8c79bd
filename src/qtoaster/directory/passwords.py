"""Password hashing for the directory: argon2id (DESIGN.md section 6).

Hashing and verifying run in libsodium (PyNaCl): twice as fast as argon2-cffi's bundled
reference code at the same parameters (12 ms against 24 ms here), and every POP3 or SMTP
login pays it.  The PHC strings are the same either way.  argon2-cffi still reads the
parameters of a stored hash (rehash decisions) and verifies what libsodium cannot: argon2i,
argon2d, or more than one lane (the foundation's first hashes had p=4).

Invariants: the directory stores only the PHC string this module returns, never the
password; :func:`verify` never raises for a wrong password or a damaged hash (it answers
False), so a corrupt row cannot turn into a server error during AUTH or POP3 login.
Passwords are ``str`` that may carry surrogate escapes (bytes from the wire, see
core.envelope); they are hashed as the original bytes.
"""

from __future__ import annotations

from functools import cache

import nacl.pwhash.argon2id as sodium
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from nacl.exceptions import CryptoError

# argon2id with OWASP's first recommended setting (19 MiB, t=2, p=1): about 12 ms per hash
# on our machines where RFC 9106's 64 MiB/t=3/p=4 profile took 120 ms; POP3 logins and
# bulk user adds need the difference (docs/decisions/0003).  Run off the event loop.
_TIME_COST, _MEMORY_KIB = 2, 19456
_hasher = PasswordHasher(time_cost=_TIME_COST, memory_cost=_MEMORY_KIB, parallelism=1)
_ARGON2 = "$argon2"
_SODIUM = "$argon2id$"  # libsodium verifies argon2id with one lane (p=1)


@cache
def _dummy_hash() -> str:
    """Verified against when a user is unknown or has no password, so that such a login
    takes as long as a real one and does not reveal which addresses exist."""
    return hash_password("qtoaster-dummy-password")


def _raw(password: str) -> bytes:
    return password.encode("utf-8", "surrogateescape")


def hash_password(password: str) -> str:
    """The argon2id PHC string (``$argon2id$v=19$m=19456,t=2,p=1$...``) for ``password``."""
    phc = sodium.str(_raw(password), opslimit=_TIME_COST, memlimit=_MEMORY_KIB * 1024)
    return phc.decode("ascii")


def _verify_argon2(password_hash: str, raw: bytes) -> bool:
    if password_hash.startswith(_SODIUM) and ",p=1$" in password_hash:
        try:
            return sodium.verify(password_hash.encode("ascii"), raw)
        except CryptoError:  # InvalidkeyError: a wrong password
            return False
        except (ValueError, TypeError, UnicodeError):
            pass  # not something libsodium reads: let argon2-cffi decide
    return _hasher.verify(password_hash, raw)


def verify(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches ``password_hash``; None (no password) never matches."""
    try:
        if password_hash is None:
            _verify_argon2(_dummy_hash(), _raw(password))
            return False
        if not password_hash.startswith(_ARGON2):
            # An imported crypt(3) hash (vpopmail): verified as is, rehashed on success.
            from qtoaster.directory import legacy

            return legacy.verify_legacy(password_hash, password)
        return _verify_argon2(password_hash, _raw(password))
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
