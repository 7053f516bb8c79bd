"""SEARCH: does one message match a search program (RFC 9051 6.4.4)?

:func:`evaluate` walks the :class:`~.commands.SearchKey` tree against a
:class:`SearchContext`. Keys about flags, numbers, sizes and INTERNALDATE need only the
:class:`MessageMeta`; the context opens the file (``ctx.load()``) only for a key that
needs the header or the body, and at most once. :func:`needs` tells the caller in advance
(``"meta"``, ``"header"``, ``"body"``) so it can skip opening files at all.

Text keys are case-insensitive substring matches (Unicode case folding) on decoded text:
header values with RFC 2047 encoded-words decoded (8-bit bytes read as UTF-8), bodies
with their transfer encoding undone and their charset decoded (unknown charsets as
UTF-8 with replacement). BODY looks in every text/* leaf (and parts without a type),
including those of attached messages; TEXT also looks in the header of the message and
of attached messages. Bodies are read part by part in chunks: memory stays bounded.

Dates: BEFORE/ON/SINCE compare the INTERNALDATE's day in the server's local time zone
(the one :func:`~.encode.imap_date` shows); SENTBEFORE/SENTON/SENTSINCE the day written in
the Date: header in its own zone; a message without a parsable Date: matches no SENT* key.
``$`` (RFC 5182) is ``ctx.saved``, a set of UIDs.
"""

from __future__ import annotations

import binascii
import codecs
import datetime
import email.utils
import re
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO, Literal

from qtoaster.maildir.storeapi import ANSWERED, DELETED, DRAFT, FLAGGED, SEEN, MessageMeta
from qtoaster.protocols.imap.commands import STAR, SearchKey, SequenceSet
from qtoaster.protocols.imap.message import MimePart
from qtoaster.protocols.imap.section import UnknownCte, decoded_body, wire_region

Need = Literal["meta", "header", "body"]

_FLAG_KEYS = {
    "ANSWERED": (ANSWERED, True),
    "DELETED": (DELETED, True),
    "DRAFT": (DRAFT, True),
    "FLAGGED": (FLAGGED, True),
    "SEEN": (SEEN, True),
    "UNANSWERED": (ANSWERED, False),
    "UNDELETED": (DELETED, False),
    "UNDRAFT": (DRAFT, False),
    "UNFLAGGED": (FLAGGED, False),
    "UNSEEN": (SEEN, False),
}
_ADDRESS_KEYS = {"BCC": b"bcc", "CC": b"cc", "FROM": b"from", "SUBJECT": b"subject", "TO": b"to"}
_HEADER_KEYS = {*_ADDRESS_KEYS, "HEADER", "SENTBEFORE", "SENTON", "SENTSINCE"}
_BODY_KEYS = {"BODY", "TEXT"}
_RANK: dict[Need, int] = {"meta": 0, "header": 1, "body": 2}


def needs(keys: Sequence[SearchKey]) -> Need:
    """The most any key needs: ``"body"`` (open and parse the file), ``"header"`` (the
    top-level header is enough: ``message.parse_header``) or ``"meta"`` (no file)."""
    best: Need = "meta"
    stack = list(keys)
    while stack:
        k = stack.pop()
        if k.name in _BODY_KEYS:
            return "body"
        if k.name in _HEADER_KEYS and _RANK[best] < 1:
            best = "header"
        stack.extend(k.children)
    return best


@dataclass
class SearchContext:
    """One message as SEARCH sees it. ``load`` returns the open file and its parsed
    structure (called at most once, only when a key needs it; the caller passes
    ``parse_header``'s result when :func:`needs` said ``"header"``). ``now`` is the current
    time for YOUNGER/OLDER. ``tz`` is the zone of INTERNALDATE days (None: local)."""

    seq: int
    meta: MessageMeta
    max_seq: int
    max_uid: int
    saved: Collection[int] = ()
    load: Callable[[], tuple[BinaryIO, MimePart]] | None = None
    now: float = 0.0
    tz: datetime.tzinfo | None = None
    _loaded: tuple[BinaryIO, MimePart] | None = field(default=None, repr=False)

    def message(self) -> tuple[BinaryIO, MimePart] | None:
        if self._loaded is None and self.load is not None:
            self._loaded = self.load()
        return self._loaded


def evaluate(keys: Sequence[SearchKey], ctx: SearchContext) -> bool:
    """True when every key matches (the top level of a program is an AND)."""
    return all(_match(k, ctx) for k in keys)


def in_set(n: int, seqset: SequenceSet, largest: int) -> bool:
    """Is ``n`` in the (non-``$``) set, with ``*`` the largest number in use."""
    for low, high in seqset.ranges:
        lo = largest if low == STAR else low
        hi = largest if high == STAR else high
        if lo > hi:
            lo, hi = hi, lo
        if lo <= n <= hi:
            return True
    return False


def _match(k: SearchKey, ctx: SearchContext) -> bool:
    name = k.name
    meta = ctx.meta
    if name == "ALL":
        return True
    if name in _FLAG_KEYS:
        flag, want = _FLAG_KEYS[name]
        return (flag in meta.flags) == want
    if name == "NOT":
        return not _match(k.children[0], ctx)
    if name == "OR":
        return _match(k.children[0], ctx) or _match(k.children[1], ctx)
    if name == "AND":
        return all(_match(c, ctx) for c in k.children)
    if name == "NEW":
        return meta.recent and SEEN not in meta.flags
    if name == "OLD":
        return not meta.recent
    if name == "RECENT":
        return meta.recent
    if name in ("KEYWORD", "UNKEYWORD"):
        want_kw = k.value.casefold()
        has = any(f.casefold() == want_kw for f in meta.flags)
        return has == (name == "KEYWORD")
    if name == "LARGER":
        return meta.size > k.number
    if name == "SMALLER":
        return meta.size < k.number
    if name == "MODSEQ":
        return meta.modseq >= k.number
    if name in ("SEQSET", "UID"):
        seqset = k.sequence
        if seqset is None:
            return False
        if seqset.saved:
            return meta.uid in ctx.saved
        if name == "UID":
            return in_set(meta.uid, seqset, ctx.max_uid)
        return in_set(ctx.seq, seqset, ctx.max_seq)
    if name in ("BEFORE", "ON", "SINCE"):
        day = _internal_day(meta.internaldate, ctx.tz)
        return k.date is not None and _compare(name, day, k.date)
    if name in ("YOUNGER", "OLDER"):
        age = ctx.now - meta.internaldate
        return age <= k.number if name == "YOUNGER" else age >= k.number
    loaded = ctx.message()
    if loaded is None:
        return False
    stream, part = loaded
    if name in ("SENTBEFORE", "SENTON", "SENTSINCE"):
        sent = _sent_day(part)
        return sent is not None and k.date is not None and _compare(name[4:], sent, k.date)
    if name in _ADDRESS_KEYS:
        return _header_contains(part, _ADDRESS_KEYS[name], k.value)
    if name == "HEADER":
        hname = k.header.lower().encode("ascii", "replace")
        if not k.value:
            return part.raw_field(hname) is not None
        return _header_contains(part, hname, k.value)
    if name == "BODY":
        return _body_contains(stream, part, _fold(k.value), with_headers=False)
    if name == "TEXT":
        return _body_contains(stream, part, _fold(k.value), with_headers=True)
    return False  # a key this evaluator does not know matches nothing


def _compare(op: str, day: datetime.date, ref: datetime.date) -> bool:
    if op == "BEFORE":
        return day < ref
    if op == "ON":
        return day == ref
    return day >= ref  # SINCE: on or after


def _internal_day(epoch: float, tz: datetime.tzinfo | None) -> datetime.date:
    try:
        return datetime.datetime.fromtimestamp(epoch, tz).date()
    except (OverflowError, OSError, ValueError):
        return datetime.date(1970, 1, 1)


def _sent_day(part: MimePart) -> datetime.date | None:
    value = part.header(b"date")
    if not value:
        return None
    parsed = email.utils.parsedate_tz(value.decode("ascii", "replace"))
    if parsed is None:
        return None
    try:
        return datetime.date(parsed[0], parsed[1], parsed[2])
    except ValueError:
        return None


# -- text ------------------------------------------------------------------------------------


def _fold(s: str) -> str:
    return s.casefold()


_ENCODED_WORD = re.compile(rb"=\?([^?\s]+)\?([QqBb])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(rb"(\?=)[ \t]+(=\?)")


def decode_header(value: bytes) -> str:
    """RFC 2047: encoded-words decoded (white space between two of them dropped); other
    bytes as UTF-8 (invalid sequences replaced). Never raises."""
    value = _BETWEEN_WORDS.sub(rb"\1\2", value)
    out: list[str] = []
    pos = 0
    for m in _ENCODED_WORD.finditer(value):
        out.append(value[pos : m.start()].decode("utf-8", "replace"))
        charset = m.group(1).split(b"*")[0].decode("ascii", "replace")
        text = m.group(3)
        try:
            if m.group(2) in b"Bb":
                raw = binascii.a2b_base64(text + b"=" * (-len(text) % 4))
            else:
                raw = binascii.a2b_qp(text, header=True)
            out.append(raw.decode(_codec(charset), "replace"))
        except (ValueError, LookupError):
            out.append(m.group(0).decode("ascii", "replace"))
        pos = m.end()
    out.append(value[pos:].decode("utf-8", "replace"))
    return "".join(out)


def _codec(charset: str) -> str:
    try:
        return codecs.lookup(charset).name
    except LookupError:
        return "utf-8"


def _header_contains(part: MimePart, name: bytes, needle: str) -> bool:
    want = _fold(needle)
    return any(want in _fold(decode_header(v)) for v in part.headers(name))


def _whole_header_text(part: MimePart) -> str:
    return _fold(decode_header(b"".join(raw for _, raw in part.fields)))


def _text_leaves(part: MimePart, with_headers: bool) -> Iterator[MimePart | str]:
    """Leaves to search in order; a ``str`` is an (already folded) header to search."""
    if part.children:
        for c in part.children:
            yield from _text_leaves(c, with_headers)
    elif part.message is not None:
        if with_headers:
            yield _whole_header_text(part.message)
        yield from _text_leaves(part.message, with_headers)
    elif not part.has_ctype or part.ctype.lower() == b"text":
        yield part


def _body_contains(stream: BinaryIO, root: MimePart, needle: str, with_headers: bool) -> bool:
    if with_headers and needle in _whole_header_text(root):
        return True
    for leaf in _text_leaves(root, with_headers):
        if isinstance(leaf, str):
            if needle in leaf:
                return True
        elif _part_contains(stream, leaf, needle):
            return True
    return False


def _part_contains(stream: BinaryIO, part: MimePart, needle: str) -> bool:
    """Streaming substring search: chunks decoded incrementally, the last
    ``len(needle) - 1`` characters carried over so a match across chunks is found."""
    if not needle:
        return True
    charset = (part.param(b"charset") or b"utf-8").decode("ascii", "replace")
    decoder = codecs.getincrementaldecoder(_codec(charset))("replace")
    try:
        chunks = decoded_body(stream, part)
    except UnknownCte:
        chunks = wire_region(stream, part.body_offset, part.body_end)
    keep = len(needle) - 1
    tail = ""
    for chunk in chunks:
        text = tail + _fold(decoder.decode(chunk))
        if needle in text:
            return True
        tail = text[-keep:] if keep else ""
    return needle in tail + _fold(decoder.decode(b"", final=True))
