"""BODY[section]<partial> and BINARY[section]: which bytes of the file, in wire form.

:func:`section_chunks` answers ``(size, chunks)``: the exact byte count first (FETCH sends
``{size}`` before the data) and then the CRLF wire form in chunks of at most
:data:`CHUNK` bytes, read from the stream as they are consumed (never the whole section
in memory). The size comes from :func:`~.message.parse_message`'s counts, which are of
the same conversion (bare LF -> CRLF, CRLF kept, see message.py), so it always equals the
bytes produced.

Part numbers (RFC 9051 6.4.5): in a multipart, ``n`` is its n-th child; in a
non-multipart entity only ``1`` exists and is the entity itself; after a message/rfc822
part the next number applies to the encapsulated message. ``HEADER``, ``TEXT`` and
``HEADER.FIELDS(.NOT)`` after part numbers need a message/rfc822 part; ``MIME`` is the
part's own header. A part that does not exist (or ``2.HEADER`` of a part that is not a
message) is an empty string, as Dovecot answers: ``BODY[9] ""`` / ``{0}``.

BINARY (RFC 3516) decodes base64 and quoted-printable; 7bit, 8bit and binary are sent
as they are (CRLF form); any other encoding raises :class:`UnknownCte` (the session
answers ``NO [UNKNOWN-CTE]``).
"""

from __future__ import annotations

import binascii
from collections.abc import Iterator
from typing import BinaryIO

from qtoaster.core.errors import FormatError
from qtoaster.protocols.imap.commands import Section
from qtoaster.protocols.imap.message import CHUNK, MimePart, crlf_size

__all__ = [
    "UnknownCte",
    "binary_chunks",
    "binary_size",
    "decoded_body",
    "message_chunks",
    "resolve",
    "section_chunks",
    "wire_region",
]


class UnknownCte(FormatError):
    """BINARY of a part whose Content-Transfer-Encoding we cannot decode."""


def resolve(root: MimePart, numbers: tuple[int, ...]) -> MimePart | None:
    """The part that ``numbers`` names, or None."""
    cur = root
    for i, n in enumerate(numbers):
        if i > 0 and cur.message is not None:
            cur = cur.message
        if cur.children:
            if not 1 <= n <= len(cur.children):
                return None
            cur = cur.children[n - 1]
        elif n != 1 or cur.is_multipart:  # a multipart without parts: its 1 is empty
            return None
    return cur


def _empty() -> Iterator[bytes]:
    return iter(())


def wire_region(stream: BinaryIO, start: int, end: int) -> Iterator[bytes]:
    """The file bytes ``start..end`` in wire form, in chunks of at most CHUNK bytes."""
    pos = start
    carry_cr = False
    while pos < end:
        stream.seek(pos)
        raw = stream.read(min(CHUNK // 2, end - pos))
        if not raw:
            return
        pos += len(raw)
        if carry_cr:
            raw = b"\r" + raw
        # a CR at the end may be half of a CRLF: keep it for the next chunk
        carry_cr = raw.endswith(b"\r") and pos < end
        if carry_cr:
            raw = raw[:-1]
        yield raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if carry_cr:
        yield b"\r"


def _partial(
    size: int, chunks: Iterator[bytes], partial: tuple[int, int] | None
) -> tuple[int, Iterator[bytes]]:
    if partial is None:
        return size, chunks
    offset, length = partial
    if offset >= size:
        return 0, _empty()
    take = min(length, size - offset)
    return take, _slice(chunks, offset, take)


def _slice(chunks: Iterator[bytes], skip: int, take: int) -> Iterator[bytes]:
    for c in chunks:
        if skip >= len(c):
            skip -= len(c)
            continue
        if skip:
            c = c[skip:]
            skip = 0
        if len(c) >= take:
            yield c[:take]
            return
        take -= len(c)
        yield c


def _header_fields(part: MimePart, names: tuple[str, ...], negate: bool) -> bytes:
    wanted = {n.lower().encode("ascii", "replace") for n in names}
    out = [raw for name, raw in part.fields if (name in wanted) != negate and name]
    data = b"".join(out).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b"\r\n"


def section_chunks(
    stream: BinaryIO,
    part: MimePart,
    section: Section | None,
    partial: tuple[int, int] | None = None,
) -> tuple[int, Iterator[bytes]]:
    """``(size, chunks)`` of ``BODY[section]<partial>`` of the message whose root is
    ``part``. ``section`` None (or ``Section()``) is the whole message (RFC822, BODY[]);
    RFC822.HEADER is ``Section(text="HEADER")`` and RFC822.TEXT ``Section(text="TEXT")``."""
    sec = section or Section()
    target = resolve(part, sec.part) if sec.part else part
    if target is None:
        return 0, _empty()
    text = sec.text
    if sec.part and text in ("HEADER", "TEXT", "HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        if target.message is None:
            return 0, _empty()
        target = target.message
    if text == "":
        if sec.part:
            start, end, size = target.body_offset, target.body_end, target.body_size
        else:
            start, end = target.header_offset, target.body_end
            size = target.header_size + target.body_size
    elif text in ("HEADER", "MIME"):
        start, end, size = target.header_offset, target.body_offset, target.header_size
    elif text == "TEXT":
        start, end, size = target.body_offset, target.body_end, target.body_size
    elif text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        data = _header_fields(target, sec.fields, text == "HEADER.FIELDS.NOT")
        return _partial(len(data), iter((data,)), partial)
    else:
        return 0, _empty()
    return _partial(size, wire_region(stream, start, end), partial)


def message_chunks(stream: BinaryIO, small: int = 1 << 20) -> tuple[int, Iterator[bytes]]:
    """``(size, chunks)`` of ``BODY[]`` (the whole message) without parsing its structure:
    the same bytes as ``section_chunks(stream, parse_message(stream), None)``. A message
    of at most ``small`` bytes is read and converted at once; a bigger one is counted in
    one pass and then streamed (wire_region), so memory stays bounded."""
    stream.seek(0)
    data = stream.read(small + 1)
    if len(data) <= small:
        wire = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        return len(wire), iter((wire,)) if wire else _empty()
    end = len(data)
    size = crlf_size(data)
    last_cr = data.endswith(b"\r")
    while chunk := stream.read(CHUNK):
        size += crlf_size(chunk) - (1 if last_cr and chunk[:1] == b"\n" else 0)
        last_cr = chunk.endswith(b"\r")
        end += len(chunk)
    return size, wire_region(stream, 0, end)


# -- BINARY ---------------------------------------------------------------------------------


def decoded_body(stream: BinaryIO, part: MimePart) -> Iterator[bytes]:
    """The part's body with its transfer encoding undone, in chunks (UnknownCte)."""
    cte = part.encoding.lower()
    region = wire_region(stream, part.body_offset, part.body_end)
    if cte in (b"7bit", b"8bit", b"binary"):
        return region
    if cte == b"base64":
        return _unbase64(region)
    if cte == b"quoted-printable":
        return _unqp(region)
    raise UnknownCte(cte.decode("ascii", "replace"))


_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_DROP = bytes(set(range(256)) - set(_B64_ALPHABET))


def _unbase64(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Lenient base64: characters outside the alphabet are ignored (RFC 2045 6.8), data
    after padding ends the part, a dangling partial quantum is dropped."""
    rest = b""
    for c in chunks:
        pad = c.find(b"=")
        data = rest + (c if pad < 0 else c[:pad]).translate(None, _B64_DROP)
        cut = len(data) - len(data) % 4
        rest = data[cut:]
        if cut:
            yield binascii.a2b_base64(data[:cut])
        if pad >= 0:
            break
    if len(rest) >= 2:
        yield binascii.a2b_base64(rest + b"=" * (-len(rest) % 4))


def _unqp(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Quoted-printable, decoded a line at a time (a soft break or ``=XX`` never splits).
    Hard line breaks stay CRLF (the canonical form of text)."""
    rest = b""
    for c in chunks:
        data = rest + c
        cut = data.rfind(b"\n") + 1
        rest = data[cut:]
        if cut:
            yield binascii.a2b_qp(data[:cut])
    if rest:
        yield binascii.a2b_qp(rest)


def _is_leaf_binary(target: MimePart) -> bool:
    return not target.children and target.message is None


def binary_size(stream: BinaryIO, part: MimePart, section_part: tuple[int, ...]) -> int:
    """BINARY.SIZE[section_part]: the decoded size (a pass through the part)."""
    return binary_chunks(stream, part, section_part, None)[0]


def binary_chunks(
    stream: BinaryIO,
    part: MimePart,
    section_part: tuple[int, ...],
    partial: tuple[int, int] | None = None,
) -> tuple[int, Iterator[bytes]]:
    """``(size, chunks)`` of ``BINARY[section_part]<partial>``: the part's body with its
    transfer encoding undone. The size costs one decoding pass over the part (the data a
    second); a multipart or message part is sent undecoded (its parts keep their own
    encodings). ``()`` is the whole message, as ``BODY[]``."""
    if not section_part:
        return section_chunks(stream, part, None, partial)
    target = resolve(part, section_part)
    if target is None:
        return 0, _empty()
    if not _is_leaf_binary(target):
        return section_chunks(stream, part, Section(part=section_part), partial)
    size = sum(len(c) for c in decoded_body(stream, target))
    return _partial(size, decoded_body(stream, target), partial)


def wire_size(data: bytes) -> int:
    """The size of ``data`` as :func:`section_chunks` sends it."""
    return crlf_size(data)
