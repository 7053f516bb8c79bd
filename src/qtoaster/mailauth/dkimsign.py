"""DKIM signing (RFC 6376) with rsa-sha256 and ed25519-sha256 (RFC 8463), relaxed/relaxed.

Input is a message as the queue stores it: bytes with LF line ends, which the SMTP client
sends with every LF turned into CRLF and everything else as it is (a stored CR stays data,
``protocols/smtp/bodyencode.py``), so the canonical forms here are computed on exactly what
the receiver gets.  Canonicalization is our own (RFC 6376 3.4.2 and 3.4.4, decision 0009):
the body is hashed as it streams, one chunk at a time (dkimpy's helpers want the whole
body in memory as one CRLF string); the cryptography is ``cryptography``'s.

Output: the ``DKIM-Signature`` header fields, LF line ends, folded under 78 columns, to be
put on top of the message unchanged (one per key: a receiver that knows only RSA still
finds a signature it can check).

Invariants: what is hashed for the signature header is the relaxed canonical form of the
very text returned, with an empty ``b=``; the ``h=`` list names each signed header field
as often as it occurs, and the oversigned ones once more (RFC 6376 8.15), so a field of
those names added later breaks the signature; nothing here reads a file or the clock
except through its arguments; a message whose header section cannot be parsed (or is
over ``MAX_HEADER`` bytes) raises :class:`Unsignable` and is sent unsigned.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from qtoaster.core.errors import FormatError

MAX_HEADER = 1 << 20  # a header section larger than this is not signed (nor sane)

# The header fields signed, in the order of h= (RFC 6376 5.4.1's list, plus RFC 8058's).
SIGNED = (
    "from",
    "subject",
    "date",
    "to",
    "cc",
    "message-id",
    "reply-to",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "list-unsubscribe",
    "list-unsubscribe-post",
)
# Named once more than they occur: nobody can add one without breaking the signature.
OVERSIGNED = frozenset(
    (
        "from",
        "subject",
        "date",
        "to",
        "cc",
        "message-id",
        "reply-to",
        "list-unsubscribe",
        "list-unsubscribe-post",
    )
)

RSA_SHA256 = "rsa-sha256"
ED25519_SHA256 = "ed25519-sha256"

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

# A run of WSP that is not already one SP (a lone SP is left alone: matching it would
# triple the time of the body's canonicalization for nothing).
_WSP_RUN = re.compile(rb"\t[ \t]*| [ \t]+")
_FIELD = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
_LINE = 78  # fold signature header lines before this column


class Unsignable(FormatError):
    """The message's header section cannot be signed (unparsable or too large)."""


@dataclass(frozen=True, slots=True)
class Signer:
    """One key to sign with: d=, s=, the algorithm and the private key."""

    domain: str
    selector: str
    algorithm: str  # RSA_SHA256 or ED25519_SHA256
    key: PrivateKey


# -- canonicalization (RFC 6376 3.4) ----------------------------------------------------


class RelaxedBody:
    """The relaxed body canonicalization (3.4.4) fed in chunks of LF-ended text, hashed.

    Trailing WSP of each line goes, every WSP run becomes one SP, the empty lines at the
    end go (withheld until a non-empty line proves they are not at the end), and a last
    line without LF gets its CRLF.  Any split of the input gives the same digest."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._carry = b""  # the part after the last LF seen
        self._blank = 0  # empty lines withheld

    def feed(self, data: bytes) -> None:
        data = self._carry + data
        cut = data.rfind(b"\n")
        if cut < 0:
            self._carry = data
            return
        self._carry = data[cut + 1 :]
        self._lines(data[: cut + 1])

    def _lines(self, block: bytes) -> None:
        block = _WSP_RUN.sub(b" ", block).replace(b" \n", b"\n")
        kept = block.rstrip(b"\n")
        if not kept:
            self._blank += len(block)
            return
        out = b"\r\n" * self._blank + kept.replace(b"\n", b"\r\n") + b"\r\n"
        self._hash.update(out)
        self._blank = len(block) - len(kept) - 1

    def digest(self) -> bytes:
        """The SHA-256 of the canonical body; call once, after the last ``feed``."""
        if self._carry:
            carry, self._carry = self._carry, b""
            self._lines(carry + b"\n")
        return self._hash.digest()


def relaxed_header(name: bytes, value: bytes) -> bytes:
    """``name:value`` of one field, relaxed (3.4.2), without the CRLF: the name lowercased,
    the value unfolded, WSP runs made one SP, WSP at either end removed."""
    unfolded = value.replace(b"\n", b"")  # a stored CR is data on the wire too
    return name.lower().rstrip(b" \t") + b":" + _WSP_RUN.sub(b" ", unfolded).strip(b" ")


def split_header(message: bytes) -> tuple[list[tuple[bytes, bytes]], int]:
    """The header fields of an LF-ended message, as (name, raw value after the colon with
    its folds), and the offset where the body starts.  Unsignable if malformed."""
    end = message.find(b"\n\n")
    if message.startswith(b"\n"):
        head, offset = b"", 1
    elif end < 0:
        head, offset = message, len(message)  # no body: the whole message is header
    else:
        head, offset = message[: end + 1], end + 2
    if len(head) > MAX_HEADER:
        raise Unsignable(f"header section over {MAX_HEADER} bytes")
    fields: list[tuple[bytes, bytes]] = []
    for line in head.split(b"\n")[:-1] if head.endswith(b"\n") else head.split(b"\n"):
        if line[:1] in (b" ", b"\t"):
            if not fields:
                raise Unsignable("the message starts with a continuation line")
            name, value = fields[-1]
            fields[-1] = (name, value + b"\n" + line)
            continue
        match = _FIELD.match(line)
        if match is None:
            raise Unsignable(f"not a header field: {line[:40]!r}")
        fields.append((match.group(1), line[match.end() :]))
    return fields, offset


def header_names(fields: Sequence[tuple[bytes, bytes]]) -> list[str]:
    """The h= list for these fields: each signed name as often as it occurs, the oversigned
    ones once more (a name that does not occur and is not oversigned is left out)."""
    counts: dict[str, int] = {}
    for raw, _ in fields:
        key = raw.decode("ascii").lower()
        counts[key] = counts.get(key, 0) + 1
    names: list[str] = []
    for name in SIGNED:
        names += [name] * (counts.get(name, 0) + (1 if name in OVERSIGNED else 0))
    return names


def header_data(fields: Sequence[tuple[bytes, bytes]], names: Iterable[str]) -> bytes:
    """The canonical header fields named by h=, in its order, each instance of a repeated
    name taken from the bottom up (RFC 6376 5.4.2); a name past the last instance adds
    nothing."""
    by_name: dict[bytes, list[tuple[bytes, bytes]]] = {}
    for raw, value in fields:
        by_name.setdefault(raw.lower(), []).append((raw, value))
    out = []
    for name in names:
        instances = by_name.get(name.lower().encode("ascii"), [])
        if instances:
            field_name, value = instances.pop()
            out.append(relaxed_header(field_name, value) + b"\r\n")
    return b"".join(out)


# -- signing ---------------------------------------------------------------------------


def sign_data(signer: Signer, data: bytes) -> bytes:
    """The b= signature of the hashed header ``data`` (RFC 6376 3.7; RFC 8463 3: Ed25519
    signs the SHA-256 of the data, as PureEdDSA)."""
    if signer.algorithm == ED25519_SHA256:
        assert isinstance(signer.key, ed25519.Ed25519PrivateKey)
        return signer.key.sign(hashlib.sha256(data).digest())
    assert isinstance(signer.key, rsa.RSAPrivateKey)
    return signer.key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def signature_field(
    signer: Signer,
    fields: Sequence[tuple[bytes, bytes]],
    body_hash: bytes,
    now: int,
    expiry: int = 0,
) -> bytes:
    """One ``DKIM-Signature`` field (LF line ends, folded, ending in LF)."""
    names = header_names(fields)
    tags = [
        "v=1",
        f"a={signer.algorithm}",
        "c=relaxed/relaxed",
        f"d={signer.domain}",
        f"s={signer.selector}",
        f"t={now}",
    ]
    if expiry > 0:
        tags.append(f"x={now + expiry}")
    tags.append("h=" + ":".join(names))
    tags.append("bh=" + base64.b64encode(body_hash).decode("ascii"))
    text = _fold("DKIM-Signature:", tags) + "b="
    unsigned = text.encode("ascii")
    name, _, value = unsigned.partition(b":")
    data = header_data(fields, names) + relaxed_header(name, value)
    signature = base64.b64encode(sign_data(signer, data)).decode("ascii")
    return (text + _fold_b64(signature, len(text) - text.rfind("\n") - 1) + "\n").encode("ascii")


def sign_message(
    message: bytes | Iterable[bytes], signers: Sequence[Signer], now: int, expiry: int = 0
) -> bytes:
    """The DKIM-Signature fields for ``message`` (LF line ends), one per signer, ready to
    be put in front of it; b"" without signers.  ``message``: the bytes, or chunks of them
    (the first chunk must hold the whole header section, or Unsignable)."""
    if not signers:
        return b""
    chunks = iter((message,) if isinstance(message, bytes) else message)
    first = next(chunks, b"")
    fields, offset = split_header(first)
    body = RelaxedBody()
    body.feed(first[offset:])
    for chunk in chunks:
        body.feed(chunk)
    body_hash = body.digest()
    return b"".join(signature_field(s, fields, body_hash, now, expiry) for s in signers)


def _fold(start: str, tags: Sequence[str]) -> str:
    """``start`` then the tags joined by "; ", folded before a tag that would pass column
    78; a long h= is folded at its colons.  Ends with "; " (or a fold) ready for b=, with
    room for at least 8 characters of its value."""
    lines = [start]
    for tag in tags:
        pieces = tag.split(":") if tag.startswith("h=") else [tag]
        for i, piece in enumerate(pieces):
            word = piece + (":" if i < len(pieces) - 1 else ";")
            if len(lines[-1]) + 1 + len(word) > _LINE:
                lines.append("\t" + word)
            else:
                glue = "" if i > 0 else " "
                lines[-1] += glue + word
    if len(lines[-1]) + 1 + len("b=") + 8 > _LINE:  # b= and some of its value fit
        lines.append("\t")
    else:
        lines[-1] += " "
    return "\n".join(lines)


def _fold_b64(value: str, column: int) -> str:
    """The b= value, folded at column 78 (FWS is allowed anywhere in it)."""
    out: list[str] = []
    room = _LINE - column
    while value:
        out.append(value[:room])
        value = value[room:]
        room = _LINE - 2
    return "\n\t".join(out)
