"""Server-usable secrets for CRAM-MD5 and APOP, stored only when an admin opts in.

Passwords live in the directory as argon2 hashes (directory.passwords), which CRAM-MD5
(RFC 2195) and APOP (RFC 1939 section 7) cannot use. This module provides the two forms
the recommended scheme stores instead (reference/python-libraries.md section 6):

- ``{CRAM-MD5}`` contexts, byte for byte as Dovecot writes them (dovecot/core
  src/lib/hmac-cram-md5.c, ``hmac_md5_get_cram_context``): the MD5 chaining values after
  the HMAC-MD5 outer pad block, then after the inner pad block (RFC 2104 section 2), each
  as four little-endian 32-bit words, 32 bytes = 64 lowercase hex. They suffice to answer
  CRAM-MD5 but do not reveal the password, so they cannot be replayed against PLAIN.
- an AES-GCM sealed copy of the secret for APOP, which needs the clear text because the
  server's timestamp is hashed before it. The key lives in a file outside the database.

Invariants: nothing here stores or returns a clear-text password except
:meth:`SecretBox.open`; the ``verify_*`` functions and :meth:`SecretBox.open` never
raise on malformed input (they answer False / None), so a damaged row or a hostile
client cannot turn into a server error. Secrets are ``str`` that may carry surrogate
escapes (bytes from the wire, see core.envelope); they are used as the original bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import os
import stat
import struct
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

CRAM_MD5_SCHEME = "{CRAM-MD5}"
"""Dovecot's scheme prefix; accepted (and not required) in front of stored contexts."""

_MASK = 0xFFFFFFFF
_BLOCK = 64
# RFC 1321 section 3.1-3.4: initial chaining value, per-step shifts, T[i] = floor(2^32 |sin i|).
_IV = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476)
_SHIFTS = (7, 12, 17, 22) * 4 + (5, 9, 14, 20) * 4 + (4, 11, 16, 23) * 4 + (6, 10, 15, 21) * 4
_T = tuple(int(abs(math.sin(i + 1)) * 2**32) & _MASK for i in range(64))
_HEX = frozenset("0123456789abcdefABCDEF")

_State = tuple[int, int, int, int]


def _compress(state: _State, block: bytes) -> _State:
    """One MD5 compression of a 64-byte block (RFC 1321 section 3.4). hashlib cannot
    start from a given chaining value, which is all the CRAM-MD5 contexts are."""
    x = struct.unpack("<16I", block)
    a, b, c, d = state
    for i in range(64):
        if i < 16:
            f, g = (b & c) | (~b & d), i
        elif i < 32:
            f, g = (d & b) | (~d & c), (5 * i + 1) % 16
        elif i < 48:
            f, g = b ^ c ^ d, (3 * i + 5) % 16
        else:
            f, g = c ^ (b | ~d), (7 * i) % 16
        f = (f + a + _T[i] + x[g]) & _MASK
        s = _SHIFTS[i]
        a, d, c = d, c, b
        b = (b + ((f << s) | (f >> (32 - s)))) & _MASK
    return (
        (state[0] + a) & _MASK,
        (state[1] + b) & _MASK,
        (state[2] + c) & _MASK,
        (state[3] + d) & _MASK,
    )


def _finish(state: _State, data: bytes) -> bytes:
    """The MD5 digest of (one block already absorbed into ``state``) + ``data``."""
    bit_length = ((_BLOCK + len(data)) * 8) & 0xFFFFFFFFFFFFFFFF
    padded = data + b"\x80" + b"\x00" * ((55 - len(data)) % _BLOCK)
    padded += struct.pack("<Q", bit_length)
    for start in range(0, len(padded), _BLOCK):
        state = _compress(state, padded[start : start + _BLOCK])
    return struct.pack("<4I", *state)


def _pad_state(key: bytes, pad: int) -> _State:
    return _compress(_IV, bytes(byte ^ pad for byte in key))


def cram_md5_contexts(password: str) -> str:
    """Dovecot's ``{CRAM-MD5}`` value for ``password`` (without the scheme prefix)."""
    key = password.encode("utf-8", "surrogateescape")
    if len(key) > _BLOCK:
        key = hashlib.md5(key).digest()  # RFC 2104 section 2: long keys are hashed first
    key = key.ljust(_BLOCK, b"\x00")
    outer, inner = _pad_state(key, 0x5C), _pad_state(key, 0x36)
    # hmac_md5_get_cram_context writes ctxo (outer) a, b, c, d, then ctx (inner).
    return struct.pack("<8I", *outer, *inner).hex()


def _parse_contexts(contexts: str) -> tuple[_State, _State]:
    """The (outer, inner) chaining values; ValueError unless 64 hex digits."""
    if contexts[: len(CRAM_MD5_SCHEME)].upper() == CRAM_MD5_SCHEME:
        contexts = contexts[len(CRAM_MD5_SCHEME) :]
    if len(contexts) != 64 or not _HEX.issuperset(contexts):
        raise ValueError("CRAM-MD5 contexts must be 64 hex digits")
    o1, o2, o3, o4, i1, i2, i3, i4 = struct.unpack("<8I", bytes.fromhex(contexts))
    return (o1, o2, o3, o4), (i1, i2, i3, i4)


def _digest(contexts: str, challenge: bytes) -> bytes:
    outer, inner = _parse_contexts(contexts)
    return _finish(outer, _finish(inner, challenge))


def cram_md5_digest(contexts: str, challenge: bytes) -> str:
    """The lowercase hex HMAC-MD5(password, challenge) a client must answer (RFC 2195).

    Raises ValueError when ``contexts`` is not a stored ``{CRAM-MD5}`` value.
    """
    return _digest(contexts, challenge).hex()


def verify_cram_md5(contexts: str, challenge: bytes, response_hex: str) -> bool:
    """Whether ``response_hex`` (the digest part of the client's answer, either case)
    is HMAC-MD5(password, challenge); False for any malformed input, never an error.

    The cost is two MD5 compressions plus one per 64 bytes of challenge; challenges are
    server-made (``<pid.time@host>``, spec section 20), so they are short.
    """
    if not isinstance(response_hex, str) or len(response_hex) != 32:
        return False
    if not _HEX.issuperset(response_hex):
        return False
    try:
        expected = _digest(contexts, challenge)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(expected, bytes.fromhex(response_hex))


def apop_digest(banner: str, secret: str) -> str:
    """Lowercase hex MD5(timestamp + secret) (RFC 1939 section 7). ``banner`` is the
    timestamp of the greeting including its angle brackets: ``<pid.time@host>``."""
    return hashlib.md5((banner + secret).encode("utf-8", "surrogateescape")).hexdigest()


def verify_apop(banner: str, secret: str, digest: str) -> bool:
    """Whether the client's APOP ``digest`` (either case) matches; never raises."""
    if not isinstance(digest, str) or len(digest) != 32 or not _HEX.issuperset(digest):
        return False
    try:
        expected = bytes.fromhex(apop_digest(banner, secret))
    except UnicodeEncodeError:  # a lone surrogate no wire bytes decode to
        return False
    return hmac.compare_digest(expected, bytes.fromhex(digest))


_KEY_BYTES = 32  # AES-256
_NONCE_BYTES = 12  # the 96-bit nonce AES-GCM is specified for (NIST SP 800-38D 5.2.1.1)
_TAG_BYTES = 16
_TOKEN_PREFIX = "v1:"
# Binds a token to its format version, so a later format cannot be fed to this one.
_AAD = b"qtoaster-secret-v1"


class SecretBox:
    """AES-GCM (cryptography) with a key kept in a file outside the database.

    Sealed tokens are ``"v1:" + base64(nonce + ciphertext + tag)`` with a fresh random
    nonce each time, so sealing the same secret twice gives different tokens. The key
    file holds exactly 32 random bytes and must not be accessible to group or others.
    """

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != _KEY_BYTES:
            raise ValueError(f"a secret key is {_KEY_BYTES} bytes, not {len(key)}")
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "SecretBox(<key hidden>)"

    @classmethod
    def load(cls, path: Path, *, create: bool = False) -> SecretBox:
        """The box whose key is in ``path``; with ``create``, a missing key file is made.

        Raises ValueError when the file is accessible by group/others, is not a regular
        file, or does not hold exactly 32 bytes; FileNotFoundError when it is missing
        and ``create`` is false.
        """
        if create and not path.exists():
            _create_key_file(path)
        return cls(_read_key_file(path))

    def seal(self, secret: str) -> str:
        """The token to store for ``secret``."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, secret.encode("utf-8", "surrogateescape"), _AAD)
        return _TOKEN_PREFIX + base64.b64encode(nonce + sealed).decode("ascii")

    def open(self, token: str) -> str | None:
        """The secret sealed in ``token``; None if it is damaged or sealed with another key."""
        if not isinstance(token, str) or not token.startswith(_TOKEN_PREFIX):
            return None
        try:
            raw = base64.b64decode(token[len(_TOKEN_PREFIX) :], validate=True)
        except (binascii.Error, ValueError):
            return None
        if len(raw) < _NONCE_BYTES + _TAG_BYTES:
            return None
        try:
            plain = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _AAD)
        except InvalidTag:
            return None
        return plain.decode("utf-8", "surrogateescape")


def _create_key_file(path: Path) -> None:
    """Write a new key so that ``path`` never exists half-written or with a wider mode:
    a 0600 temporary file made with O_EXCL, fsynced, then hard-linked into place (link
    fails rather than replaces, so a concurrent creator's key wins and ours is dropped)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # the umask may only narrow 0600, but be explicit
            os.write(fd, os.urandom(_KEY_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)  # make the new name durable, as qmail-queue does for its files
    finally:
        os.close(dir_fd)


def _read_key_file(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"secret key file {path} is not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise ValueError(
                f"secret key file {path} has mode {mode:04o}: it must not be readable "
                f"or writable by group or others (run: chmod 600 {path})"
            )
        key = os.read(fd, _KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(key) != _KEY_BYTES:
        raise ValueError(f"secret key file {path} must hold exactly {_KEY_BYTES} bytes")
    return key
