"""Legacy crypt(3) password hashes brought over from vpopmail, checked with libpass.

vpopmail stores ``crypt(3)`` strings in vpasswd / ``pw_passwd``: MD5-crypt ``$1$``,
SHA-256 ``$5$``, SHA-512 ``$6$`` (vpopmail 5.6's default), traditional 13-character DES,
and bcrypt ``$2a$``/``$2b$``/``$2y$`` on some systems.  The importer stores them as they are;
the directory verifies a login against them here and then rehashes to argon2id.

Invariants: nothing here raises, whatever the stored string or the password (a damaged
row or a missing bcrypt backend answers False); passwords are ``str`` that may carry
surrogate escapes and are checked as their original bytes, as passwords.py does.
"""

from __future__ import annotations

from typing import Any

from passlib.hash import bcrypt, des_crypt, md5_crypt, sha256_crypt, sha512_crypt

# Order matters only for speed: the common vpopmail forms first.
_HANDLERS: tuple[Any, ...] = (sha512_crypt, md5_crypt, sha256_crypt, bcrypt, des_crypt)


def _handler(password_hash: str) -> Any | None:
    for handler in _HANDLERS:
        try:
            if handler.identify(password_hash):
                return handler
        except Exception:  # identify() of a damaged string: not this form
            continue
    return None


def is_legacy(password_hash: str) -> bool:
    """Whether ``password_hash`` is one of the crypt(3) forms above (argon2 is not)."""
    return _handler(password_hash) is not None


def verify_legacy(password_hash: str, password: str) -> bool:
    """Whether ``password`` matches the crypt(3) string; False for anything unusable."""
    handler = _handler(password_hash)
    if handler is None:
        return False
    try:
        return bool(handler.verify(password.encode("utf-8", "surrogateescape"), password_hash))
    except Exception:
        # ValueError (malformed hash, NUL in a DES password), MissingBackendError (bcrypt
        # not installed), UnicodeError: the login fails, the server does not.
        return False
