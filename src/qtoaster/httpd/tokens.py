"""API tokens: made by ``qtoaster token add``, checked by the http role's executor.

A token is 32 random bytes (``qt_`` + 43 URL-safe base64 characters), shown once; the
file ``HOME/http-tokens.json`` keeps only its SHA-256, its name and its scope (``site`` or
one domain).  A high-entropy token needs no slow hash: SHA-256 of 256 random bits cannot
be reversed, and a constant-time comparison of the digests leaks nothing useful.

Invariants: the file is replaced atomically (write, fsync, rename) and created 0600; a
name is unique; a domain scope names a domain in lower case.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from qtoaster.core.errors import QtoasterError

PREFIX = "qt_"
SITE = "site"


class TokenError(QtoasterError):
    """A token request that cannot succeed (duplicate or unknown name, bad file)."""


@dataclass(frozen=True, slots=True)
class Token:
    name: str
    scope: str  # "site" or a domain name
    digest: str  # hex SHA-256 of the token
    created: int


def tokens_file(home_root: Path) -> Path:
    return home_root / "http-tokens.json"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def load(path: Path) -> list[Token]:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise TokenError(f"{path}: unreadable token file: {exc}") from exc
    try:
        return [
            Token(str(t["name"]), str(t["scope"]), str(t["digest"]), int(t["created"])) for t in raw
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise TokenError(f"{path}: malformed token file: {exc}") from exc


def _save(path: Path, tokens: list[Token]) -> None:
    temporary = path.with_name(path.name + ".new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as stream:
        json.dump([asdict(t) for t in tokens], stream, indent=1)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)


def add(path: Path, name: str, scope: str) -> str:
    """Store a new token named ``name``; the token itself (the only time it is known)."""
    tokens = load(path)
    if any(t.name == name for t in tokens):
        raise TokenError(f"a token named {name!r} exists already")
    token = PREFIX + secrets.token_urlsafe(32)
    _save(path, [*tokens, Token(name, scope, digest(token), int(time.time()))])
    return token


def delete(path: Path, name: str) -> None:
    tokens = load(path)
    kept = [t for t in tokens if t.name != name]
    if len(kept) == len(tokens):
        raise TokenError(f"no token named {name!r}")
    _save(path, kept)


def check(path: Path, token: str) -> Token | None:
    """The stored token matching ``token``, or None."""
    wanted = digest(token)
    found = None
    for stored in load(path):
        if hmac.compare_digest(stored.digest, wanted):
            found = stored
    return found
