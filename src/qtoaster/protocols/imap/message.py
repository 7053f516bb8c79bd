"""The MIME structure of a message file, found in one pass over its lines.

:func:`parse_message` reads a message from a seekable binary stream positioned anywhere
(it seeks to 0) and returns the root :class:`MimePart`: for every part the file offsets
of its header and body, their sizes in the CRLF wire form, their line counts, its header
fields (raw, bounded) and its Content-Type; children for multipart, the encapsulated
message for message/rfc822. No body byte is kept: a 50 MB attachment costs one read
through it, counted by C-level ``bytes`` methods where no boundary can occur.

Line ends: files normally have LF (as delivery writes them), sometimes CRLF (what a
client appended). CRLF counts as one line end; a bare LF becomes CRLF on the wire, so a
region's wire size is ``len + count(LF) - count(CRLF)``; a bare CR is an ordinary byte.
The line end before a boundary line belongs to the boundary (RFC 2046 5.1.1), so it is
in neither the part before it nor its size.

Invariants: :func:`parse_message` never raises on any input (only the stream's own
errors pass through); work is bounded on hostile input: nesting beyond
:data:`MAX_DEPTH` or parts beyond :data:`MAX_PARTS` are opaque leaves, a line is read in
pieces of at most :data:`MAX_LINE` bytes (a piece that does not start a line is never a
boundary or a header field), and at most :data:`MAX_HEADER_KEEP` bytes / :data:`MAX_FIELDS`
fields of a header are kept (the sizes still count all of it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import BinaryIO

MAX_DEPTH = 100
MAX_PARTS = 10_000
MAX_LINE = 64 * 1024
MAX_HEADER_KEEP = 256 * 1024
MAX_FIELDS = 2_000
CHUNK = 64 * 1024


@dataclass(slots=True, eq=False)
class MimePart:
    """One MIME entity. Offsets are into the file; sizes and line counts are of the CRLF
    form. ``header_offset..body_offset`` is the header with its terminating blank line
    (absent when the file ends inside the header); ``body_offset..body_end`` the body."""

    header_offset: int = 0
    body_offset: int = 0
    body_end: int = 0
    header_size: int = 0
    body_size: int = 0
    header_lines: int = 0
    body_lines: int = 0
    # (lower-cased name, raw field bytes with their original line ends) in file order
    fields: list[tuple[bytes, bytes]] = field(default_factory=list)
    fields_truncated: bool = False
    ctype: bytes = b"text"  # as written in the header (Dovecot keeps the case too)
    subtype: bytes = b"plain"
    params: list[tuple[bytes, bytes]] = field(default_factory=list)
    has_ctype: bool = False
    children: list[MimePart] = field(default_factory=list)
    message: MimePart | None = None  # the encapsulated message of message/rfc822
    _first: dict[bytes, bytes] | None = field(default=None, repr=False)

    def first_values(self) -> dict[bytes, bytes]:
        """Every field's first unfolded value by lower-case name (computed once)."""
        if self._first is None:
            first: dict[bytes, bytes] = {}
            for n, raw in self.fields:
                if n not in first:
                    first[n] = field_value(raw)
            self._first = first
        return self._first

    @property
    def is_multipart(self) -> bool:
        return self.ctype.lower() == b"multipart"

    @property
    def is_message(self) -> bool:
        """message/rfc822 (or message/global) whose body was parsed as a message."""
        return self.message is not None

    def raw_field(self, name: bytes) -> bytes | None:
        """The first field named ``name`` (lower case), raw: ``Name: value\\n\\tmore\\n``."""
        for n, raw in self.fields:
            if n == name:
                return raw
        return None

    def header(self, name: bytes) -> bytes | None:
        """The unfolded value of the first field ``name`` (lower case), leading and trailing
        white space removed, or None when the field is absent."""
        raw = self.raw_field(name)
        return None if raw is None else field_value(raw)

    def headers(self, name: bytes) -> list[bytes]:
        """The unfolded values of every field ``name`` (lower case)."""
        return [field_value(raw) for n, raw in self.fields if n == name]

    def param(self, name: bytes) -> bytes | None:
        for n, v in self.params:
            if n.lower() == name:
                return v
        return None

    @property
    def encoding(self) -> bytes:
        """Content-Transfer-Encoding, as written (``7bit`` when absent)."""
        v = self.header(b"content-transfer-encoding")
        return v.split()[0] if v and v.split() else b"7bit"


def field_value(raw: bytes) -> bytes:
    """``Name: a\\n b\\n`` -> ``a b``: unfold (RFC 5322 2.2.3) and strip."""
    colon = raw.find(b":")
    value = raw[colon + 1 :] if colon >= 0 else raw
    return value.replace(b"\r\n", b"\n").replace(b"\n", b"").strip(b" \t\r\n")


def crlf_size(data: bytes) -> int:
    """The size of ``data`` once every bare LF is CRLF."""
    return len(data) + data.count(b"\n") - data.count(b"\r\n")


# -- Content-Type and friends: RFC 2045 5.1 with RFC 2231 left as written ------------------


def _skip_ws_comments(s: bytes, i: int) -> int:
    n = len(s)
    while i < n:
        c = s[i]
        if c in b" \t\r\n":
            i += 1
        elif c == 0x28:  # "(": a comment, nested, with quoted pairs
            depth = 0
            while i < n:
                c = s[i]
                if c == 0x5C:
                    i += 2
                    continue
                if c == 0x28:
                    depth += 1
                elif c == 0x29:
                    depth -= 1
                    if depth == 0:
                        i += 1
                        break
                i += 1
        else:
            break
    return i


_TSPECIALS = b'()<>@,;:\\"/[]?= \t\r\n'


def _token(s: bytes, i: int) -> tuple[bytes, int]:
    n = len(s)
    j = i
    while j < n and s[j] not in _TSPECIALS:
        j += 1
    return s[i:j], j


def _quoted_string(s: bytes, i: int) -> tuple[bytes, int]:
    """``s[i]`` is the opening quote."""
    out = bytearray()
    i += 1
    n = len(s)
    while i < n:
        c = s[i]
        if c == 0x5C and i + 1 < n:
            out.append(s[i + 1])
            i += 2
        elif c == 0x22:
            return bytes(out), i + 1
        else:
            out.append(c)
            i += 1
    return bytes(out), i


def parse_params(s: bytes, i: int) -> list[tuple[bytes, bytes]]:
    """``; a=b; c="d"`` from ``i`` on. Malformed pieces are skipped, never an error."""
    params: list[tuple[bytes, bytes]] = []
    n = len(s)
    while i < n and len(params) < 100:
        i = _skip_ws_comments(s, i)
        if i >= n:
            break
        if s[i] != 0x3B:  # junk before the next ";": skip to it
            j = s.find(b";", i)
            if j < 0:
                break
            i = j
        i = _skip_ws_comments(s, i + 1)
        name, i = _token(s, i)
        i = _skip_ws_comments(s, i)
        if not name or i >= n or s[i] != 0x3D:
            continue
        i = _skip_ws_comments(s, i + 1)
        if i < n and s[i] == 0x22:
            value, i = _quoted_string(s, i)
        else:
            value, i = _token(s, i)
        params.append((name, value))
    return params


def parse_value_params(s: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """``attachment; filename=x`` -> (b"attachment", [(b"filename", b"x")])."""
    i = _skip_ws_comments(s, 0)
    value, i = _token(s, i)
    return value, parse_params(s, i)


def _content_type(part: MimePart, raw: bytes) -> None:
    s = field_value(raw)
    i = _skip_ws_comments(s, 0)
    t, i = _token(s, i)
    i = _skip_ws_comments(s, i)
    if not t or i >= len(s) or s[i] != 0x2F:
        return  # invalid: the default stays (RFC 2045 5.2)
    sub, i = _token(s, _skip_ws_comments(s, i + 1))
    if not sub:
        return
    part.ctype, part.subtype, part.has_ctype = t, sub, True
    part.params = parse_params(s, i)


# -- the one-pass parser -------------------------------------------------------------------


class _Lines:
    """The stream read in line pieces of at most MAX_LINE bytes, with running totals of
    what was consumed: file offset ``pos``, wire (CRLF) size ``wire``, LF count ``nl``.
    ``b_*`` are the same totals at the end of the region the last scan ended: before the
    line end preceding the boundary line it found, or at EOF."""

    __slots__ = (
        "at_start",
        "b_nl",
        "b_pos",
        "b_wire",
        "nl",
        "pos",
        "prev_cr",
        "readline",
        "stream",
        "wire",
    )

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.readline = stream.readline
        self.pos = self.wire = self.nl = 0
        self.b_pos = self.b_wire = self.b_nl = 0
        self.at_start = True  # the next piece starts a line
        self.prev_cr = False  # the last piece consumed ended with CR (a CRLF may be split)

    def mark(self) -> None:
        self.b_pos, self.b_wire, self.b_nl = self.pos, self.wire, self.nl

    def consume(self, line: bytes) -> None:
        n = len(line)
        self.pos += n
        self.wire += n
        if line[-1] == 0x0A:
            self.nl += 1
            if not ((n >= 2 and line[-2] == 0x0D) or (n == 1 and self.prev_cr)):
                self.wire += 1
            self.at_start = True
            self.prev_cr = False
        else:
            self.at_start = False
            self.prev_cr = line[-1] == 0x0D


# What ended a region: EOF, or (index in the boundary stack, close delimiter).
_EOF = (-1, False)


def _match(line: bytes, stack: list[bytes]) -> tuple[int, bool] | None:
    for idx in range(len(stack) - 1, -1, -1):
        b = stack[idx]
        if line.startswith(b):
            rest = line[len(b) :]
            close = rest.startswith(b"--")
            if close:
                rest = rest[2:]
            if not rest.strip(b" \t\r\n"):
                return idx, close
    return None


def parse_message(stream: BinaryIO) -> MimePart:
    """The MIME structure of the message in ``stream`` (read from offset 0 to its end)."""
    stream.seek(0)
    part = MimePart()
    _parse_entity(_Lines(stream), part, [], 0, [0], False)
    return part


def parse_header(stream: BinaryIO) -> MimePart:
    """Only the top-level header (enough for ENVELOPE and header searches, and much
    cheaper for a big message): ``body_*`` are 0 and there are no children."""
    stream.seek(0)
    part = MimePart()
    _parse_header(_Lines(stream), part, [])
    return part


def _parse_header(r: _Lines, part: MimePart, stack: list[bytes]) -> tuple[int, bool] | None:
    """Read the header into ``part``; returns a boundary match if one ended it early (the
    boundary line is consumed and ``r.b_*`` is its start)."""
    part.header_offset = r.pos
    wire0, nl0 = r.wire, r.nl
    kept = 0
    fields = part.fields
    cur: list[bytes] = []  # the pieces of the field being read
    readline = r.readline
    ended: tuple[int, bool] | None = None
    body_offset = -1
    while True:
        line = readline(MAX_LINE)
        if not line:
            break
        at_start = r.at_start
        if at_start:
            if line == b"\n" or line == b"\r\n":
                r.consume(line)
                break
            if stack and line[0] == 0x2D:
                ended = _match(line, stack)
                if ended is not None:
                    r.mark()
                    body_offset = r.pos
                    r.consume(line)
                    break
        r.consume(line)
        if part.fields_truncated:
            continue
        if at_start and line[0] not in b" \t" and cur:
            _add_field(part, b"".join(cur))
            cur = []
        kept += len(line)
        if kept > MAX_HEADER_KEEP or len(fields) >= MAX_FIELDS:
            part.fields_truncated = True
            cur = []
            continue
        cur.append(line)
    if cur:
        _add_field(part, b"".join(cur))
    if body_offset < 0:
        part.body_offset = r.pos
        part.header_size, part.header_lines = r.wire - wire0, r.nl - nl0
    else:
        part.body_offset = body_offset
        part.header_size, part.header_lines = r.b_wire - wire0, r.b_nl - nl0
    ct = part.raw_field(b"content-type")
    if ct is not None:
        _content_type(part, ct)
    return ended


def _add_field(part: MimePart, raw: bytes) -> None:
    colon = raw.find(b":")
    name = raw[:colon].strip(b" \t").lower() if colon >= 0 else b""
    part.fields.append((name, raw))


def _parse_entity(
    r: _Lines, part: MimePart, stack: list[bytes], depth: int, count: list[int], digest: bool
) -> tuple[int, bool]:
    """Parse one entity (header and body) that ends at a boundary of ``stack`` or EOF;
    returns what ended it, with ``r.b_*`` at the end of its body."""
    count[0] += 1
    early = _parse_header(r, part, stack)
    if early is not None:
        part.body_end = part.body_offset
        return early
    if digest and not part.has_ctype:
        part.ctype, part.subtype = b"message", b"rfc822"  # RFC 2046 5.1.5
    wire0, nl0 = r.wire, r.nl
    ok = depth < MAX_DEPTH and count[0] < MAX_PARTS
    ctype = part.ctype.lower()
    boundary = part.param(b"boundary") if ctype == b"multipart" else None
    if ok and boundary:
        end = _parse_multipart(r, part, stack, depth, count, b"--" + boundary)
    elif (
        ok
        and ctype == b"message"
        and part.subtype.lower() in (b"rfc822", b"global")
        and part.encoding.lower() in (b"7bit", b"8bit", b"binary")
    ):
        inner = MimePart()
        end = _parse_entity(r, inner, stack, depth + 1, count, False)
        part.message = inner
    else:
        end = _scan(r, stack)
    part.body_end = r.b_pos
    part.body_size = r.b_wire - wire0
    part.body_lines = r.b_nl - nl0
    return end


def _parse_multipart(
    r: _Lines, part: MimePart, stack: list[bytes], depth: int, count: list[int], boundary: bytes
) -> tuple[int, bool]:
    inner_stack = [*stack, boundary]
    own = len(stack)
    digest = part.subtype.lower() == b"digest"
    end = _scan(r, inner_stack)  # the preamble
    while end[0] == own and not end[1]:
        if count[0] >= MAX_PARTS:
            return _scan(r, stack)  # the rest is opaque to the enclosing entity's end
        child = MimePart()
        end = _parse_entity(r, child, inner_stack, depth + 1, count, digest)
        part.children.append(child)
    if end[0] == own:  # the close delimiter: the epilogue runs to the enclosing end
        end = _scan(r, stack)
    return end


def _scan(r: _Lines, stack: list[bytes]) -> tuple[int, bool]:
    """Consume lines up to and including a boundary line of ``stack``, or to EOF."""
    if not stack:
        return _count_to_eof(r)
    readline = r.readline
    pos, wire, nl, at_start, prev_cr = r.pos, r.wire, r.nl, r.at_start, r.prev_cr
    pend = 0  # the raw length of the last line end (it belongs to a boundary after it)
    end = _EOF
    while True:
        line = readline(MAX_LINE)
        if not line:
            r.b_pos, r.b_wire, r.b_nl = pos, wire, nl
            break
        n = len(line)
        if at_start and line[0] == 0x2D:
            m = _match(line, stack)
            if m is not None:
                r.b_pos = pos - pend
                r.b_wire = wire - (2 if pend else 0)
                r.b_nl = nl - (1 if pend else 0)
                end = m
                r.pos, r.wire, r.nl, r.at_start, r.prev_cr = pos, wire, nl, at_start, prev_cr
                r.consume(line)
                return end
        pos += n
        wire += n
        if line[-1] == 0x0A:
            nl += 1
            at_start = True
            if n >= 2 and line[-2] == 0x0D:
                pend = 2
            elif n == 1 and prev_cr:
                pend = 2  # a CRLF split between two pieces
            else:
                wire += 1
                pend = 1
            prev_cr = False
        else:
            at_start = False
            pend = 0
            prev_cr = line[-1] == 0x0D
    r.pos, r.wire, r.nl, r.at_start, r.prev_cr = pos, wire, nl, at_start, prev_cr
    return end


def _count_to_eof(r: _Lines) -> tuple[int, bool]:
    """A body no boundary can end: count it in chunks (C speed, bounded memory)."""
    read = r.stream.read
    prev_cr = r.prev_cr
    while True:
        chunk = read(CHUNK)
        if not chunk:
            break
        n = len(chunk)
        lf = chunk.count(b"\n")
        crlf = chunk.count(b"\r\n") + (1 if prev_cr and chunk[0] == 0x0A else 0)
        r.pos += n
        r.wire += n + lf - crlf
        r.nl += lf
        prev_cr = chunk[-1] == 0x0D
    r.prev_cr = prev_cr
    r.mark()
    return _EOF
