"""The Sender Rewriting Scheme of libsrs2 and postsrsd: forward and reverse (docs/srs.md).

A forwarded message leaves with an envelope sender at the forwarding domain, so that SPF
at the next hop checks our domain, and a bounce to it comes back to us and is sent on to
the original sender::

    SRS0=HHHH=TT=orig-domain=orig-local@forwarding-domain
    SRS1=HHHH=first-forwarder==HHHH=TT=orig-domain=orig-local@forwarding-domain

``TT`` is the day (days since the epoch mod 1024) in two base32 characters; ``HHHH`` the
first four characters of the base64 HMAC-SHA1, under the secret, of the timestamp, domain
and local part (SRS0), or of the first forwarder and the SRS0 part (SRS1). Rewriting an
SRS0 or SRS1 address again gives SRS1 (the chain does not grow), as libsrs2 does.

Invariants:
- :meth:`Srs.reverse` raises only :class:`SrsError`, whatever the string, with one of
  three reasons for the log (:data:`MALFORMED`, :data:`BAD_HASH`, :data:`EXPIRED`);
- hashes are compared without regard to case (a relay may change the case of a local
  part), in constant time; the hashed text is lowercased for the same reason;
- several keys verify, the first one signs (key rotation, :func:`read_keys`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from qtoaster.core.errors import FormatError, TemporaryFailure
from qtoaster.core.home import Home

HASH_LENGTH = 4
DEFAULT_MAX_AGE_DAYS = 21
_TS_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_TS_VALUES = {c: i for i, c in enumerate(_TS_ALPHABET)}
_TS_MODULUS = 1024  # two base32 characters: 10 bits of days
_DAY = 86400
# The separator after SRS0/SRS1 may be '=', '+' or '-' (libsrs2 accepts all three).
_SRS_PREFIX = re.compile(r"^(srs[01])[=+-]", re.IGNORECASE)

MALFORMED = "malformed SRS address"
BAD_HASH = "bad SRS hash"
EXPIRED = "expired SRS timestamp"


class SrsError(FormatError, ValueError):
    """An address that does not reverse; ``reason`` is one of the three constants."""

    def __init__(self, reason: str, address: str) -> None:
        super().__init__(f"{reason}: {address!r}")
        self.reason = reason
        self.address = address


def is_srs(local: str) -> bool:
    """Whether a local part has the form of an SRS0 or SRS1 address (not checked)."""
    return _SRS_PREFIX.match(local) is not None


def key_path(home: Home) -> Path:
    """``HOME/secrets/srs.key``: the auth role's alone (0600, docs/security.md)."""
    return home.root / "secrets" / "srs.key"


def read_keys(path: Path) -> tuple[bytes, ...]:
    """The keys of ``path``, one per line (blank lines and ``#`` comments skipped); the
    first signs. OSError when unreadable; ValueError when it holds none."""
    keys = tuple(
        line.strip().encode()
        for line in path.read_text("utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    if not keys:
        raise ValueError(f"{path}: no SRS key in it")
    return keys


def new_key() -> str:
    """A new key: 32 random bytes as base64 text (one line of the key file)."""
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def write_keys(path: Path, keys: list[str]) -> None:
    """Write ``keys`` (the first signs) to ``path``, 0600, replacing it atomically."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write("".join(f"{key}\n" for key in keys))
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


def timestamp(now: float) -> str:
    days = int(now // _DAY) % _TS_MODULUS
    return _TS_ALPHABET[days >> 5] + _TS_ALPHABET[days & 31]


def _is_stamp(text: str) -> bool:
    return len(text) == 2 and all(c.upper() in _TS_VALUES for c in text)


@dataclass(frozen=True, slots=True)
class Srs:
    """Forward and reverse with ``keys`` (the first signs, all verify)."""

    keys: tuple[bytes, ...]
    max_age_days: int = DEFAULT_MAX_AGE_DAYS

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("SRS needs at least one key")

    def forward(self, sender: str, domain: str, now: float | None = None) -> str:
        """``sender`` rewritten at ``domain``: SRS0, or SRS1 when it is SRS already.
        ValueError when ``sender`` has no domain."""
        local, at, sender_domain = sender.rpartition("@")
        if not at or not local or not sender_domain or not domain:
            raise ValueError(f"cannot rewrite {sender!r}: not local@domain")
        prefix = _SRS_PREFIX.match(local)
        if prefix is not None and prefix.group(1).upper() == "SRS0":
            # First forwarder: the SRS0 address's domain; keep its part after "SRS0".
            host, srs0_part = sender_domain, local[4:]
            return self._srs1(host, srs0_part, domain)
        if prefix is not None:  # SRS1: keep the first forwarder and the SRS0 part
            parts = local[5:].split("=", 2)
            if len(parts) == 3 and parts[1] and parts[2]:
                return self._srs1(parts[1], parts[2], domain)
        stamp = timestamp(time.time() if now is None else now)
        digest = self._hash(self.keys[0], stamp, sender_domain, local)
        return f"SRS0={digest}={stamp}={sender_domain}={local}@{domain}"

    def _srs1(self, host: str, srs0_part: str, domain: str) -> str:
        digest = self._hash(self.keys[0], host, srs0_part)
        return f"SRS1={digest}={host}={srs0_part}@{domain}"

    def reverse(self, address: str, now: float | None = None) -> str:
        """The address ``address`` was made from: the original sender (SRS0), or the
        first forwarder's SRS0 address (SRS1). SrsError when it is none of ours."""
        local, at, _domain = address.rpartition("@")
        prefix = _SRS_PREFIX.match(local) if at else None
        if prefix is None:
            raise SrsError(MALFORMED, address)
        rest = local[5:]
        if prefix.group(1).upper() == "SRS1":
            parts = rest.split("=", 2)
            if len(parts) != 3 or not parts[1] or not parts[2]:
                raise SrsError(MALFORMED, address)
            digest, host, srs0_part = parts
            self._check(digest, address, host, srs0_part)
            return f"SRS0{srs0_part}@{host}"
        parts = rest.split("=", 3)
        if len(parts) != 4 or not all(parts) or not _is_stamp(parts[1]):
            raise SrsError(MALFORMED, address)
        digest, stamp, orig_domain, orig_local = parts
        self._check(digest, address, stamp, orig_domain, orig_local)
        if not self._fresh(stamp, time.time() if now is None else now):
            raise SrsError(EXPIRED, address)
        return f"{orig_local}@{orig_domain}"

    def _check(self, digest: str, address: str, *data: str) -> None:
        if len(digest) != HASH_LENGTH:
            raise SrsError(MALFORMED if not digest else BAD_HASH, address)
        given = digest.lower().encode("utf-8", "surrogatepass")
        for key in self.keys:
            wanted = self._hash(key, *data).lower().encode("ascii")
            if hmac.compare_digest(given, wanted):
                return
        raise SrsError(BAD_HASH, address)

    def _fresh(self, stamp: str, now: float) -> bool:
        then = (_TS_VALUES[stamp[0].upper()] << 5) | _TS_VALUES[stamp[1].upper()]
        today = int(now // _DAY) % _TS_MODULUS
        if today < then:  # the day count wrapped round since
            today += _TS_MODULUS
        return today - then <= self.max_age_days

    @staticmethod
    def _hash(key: bytes, *data: str) -> str:
        mac = hmac.new(key, digestmod=hashlib.sha1)
        for piece in data:
            mac.update(piece.lower().encode("utf-8", "surrogatepass"))
        return base64.b64encode(mac.digest()).decode("ascii")[:HASH_LENGTH]


class KeyRing:
    """The key file, read again when it changed (a ``qtoaster srs keygen --rotate`` is
    taken without a restart); thread-safe enough: a race reads the file twice."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int] | None = None
        self._keys: tuple[bytes, ...] = ()

    def keys(self) -> tuple[bytes, ...]:
        """The keys; OSError when the file cannot be read, ValueError when it holds none."""
        st = os.stat(self.path)
        seen = (st.st_mtime_ns, st.st_size)
        if seen != self._seen:
            self._keys, self._seen = read_keys(self.path), seen
        return self._keys

    def srs(self, max_age_days: int) -> Srs:
        return Srs(self.keys(), max_age_days)


class SrsService(Protocol):
    """What a role asks of SRS: this module in-process (:class:`LocalSrs`, when the role
    may read the key) or the auth role (auth.client.AuthRoleSrs) when it may not."""

    def forward(self, sender: str, domain: str) -> str:
        """``sender`` rewritten at ``domain``; ValueError when it has no domain,
        TemporaryFailure when it cannot be done now."""
        ...

    def reverse(self, address: str) -> str:
        """What ``address`` was made from; SrsError when it is none of ours,
        TemporaryFailure when it cannot be checked now."""
        ...


class LocalSrs:
    """:class:`SrsService` with the key file read by this process."""

    def __init__(self, keys: KeyRing, max_age_days: int = DEFAULT_MAX_AGE_DAYS) -> None:
        self._keys = keys
        self._max_age_days = max_age_days

    def _srs(self) -> Srs:
        try:
            return self._keys.srs(self._max_age_days)
        except (OSError, ValueError) as exc:
            raise TemporaryFailure(f"no SRS key (qtoaster srs keygen): {exc}") from exc

    def forward(self, sender: str, domain: str) -> str:
        return self._srs().forward(sender, domain)

    def reverse(self, address: str) -> str:
        return self._srs().reverse(address)
