"""The two large sub-grammars of IMAP commands: FETCH items and SEARCH keys.

FETCH (RFC 9051 6.4.5, RFC 3516 BINARY, RFC 7162 MODSEQ): the macros ALL, FAST and FULL
are expanded; ``BODY[section]<partial>``, ``BODY.PEEK``, ``BINARY[part]<partial>``,
``BINARY.PEEK`` and ``BINARY.SIZE[part]`` become :class:`commands.FetchItem` values.
SEARCH (RFC 9051 6.4.4, RFC 7162 MODSEQ, RFC 5032 YOUNGER/OLDER): a list of keys, with
NOT, OR and parenthesised lists nested at most :data:`MAX_DEPTH` deep.

Invariants: no I/O; each reader consumes exactly what it returns or raises ParseError.
"""

from __future__ import annotations

import re
from typing import Final

from qtoaster.protocols.imap.commands import FetchItem, SearchKey, Section
from qtoaster.protocols.imap.grammar import MAX_NUMBER64, Cursor, ParseError

MAX_DEPTH: Final = 50  # nesting of search keys; bounds the recursion

# -- FETCH ------------------------------------------------------------------------------------

_ITEM = re.compile(r"[A-Za-z0-9.]+")
_SIMPLE: Final = {
    name: (FetchItem(name),)
    for name in (
        "FLAGS",
        "INTERNALDATE",
        "RFC822.SIZE",
        "ENVELOPE",
        "BODYSTRUCTURE",
        "BODY",
        "UID",
        "MODSEQ",
        "RFC822",
        "RFC822.HEADER",
        "RFC822.TEXT",
        "SAVEDATE",
        "EMAILID",
        "THREADID",
    )
}
_MACROS: Final = {
    "ALL": tuple(FetchItem(n) for n in ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE")),
    "FAST": tuple(FetchItem(n) for n in ("FLAGS", "INTERNALDATE", "RFC822.SIZE")),
    "FULL": tuple(
        FetchItem(n) for n in ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY")
    ),
}
_SECTIONED: Final = {  # name with a "[": (item name, peek, binary)
    "BODY": ("BODY", False, False),
    "BODY.PEEK": ("BODY", True, False),
    "BINARY": ("BINARY", False, True),
    "BINARY.PEEK": ("BINARY", True, True),
    "BINARY.SIZE": ("BINARY.SIZE", False, True),
}
_PART = re.compile(r"[1-9][0-9]{0,8}(?:\.[1-9][0-9]{0,8})*")
_MSGTEXT = re.compile(r"(HEADER\.FIELDS\.NOT|HEADER\.FIELDS|HEADER|TEXT|MIME)", re.IGNORECASE)
_PARTIAL = re.compile(r"<([0-9]{1,20})\.([0-9]{1,20})>")
_WHOLE: Final = Section()


# A client repeats the same item list in command after command (a mail client's FETCH of
# new messages): a parenthesised list without quotes or literals is parsed once and then
# looked up. Keys are bounded in length and number; the values are immutable.
_LIST_TEXT = re.compile(r"\((?:[^()\"{}\r\n]|\([^()\"{}\r\n]*\)){1,400}\)")
_CACHE: dict[str, tuple[FetchItem, ...]] = {}
_CACHE_SIZE: Final = 256


def fetch_items(cur: Cursor) -> tuple[FetchItem, ...]:
    """A macro, one item, or a parenthesised list of items."""
    if cur.peek() == "(":
        m = _LIST_TEXT.match(cur.s, cur.pos)
        if m is not None:
            cached = _CACHE.get(m.group())
            if cached is not None:
                cur.pos = m.end()
                return cached
        cur.pos += 1
        items = list(_fetch_item(cur))
        while cur.skip(" "):
            items += _fetch_item(cur)
        cur.close()
        result = tuple(items)
        if m is not None and cur.pos == m.end():
            if len(_CACHE) >= _CACHE_SIZE:
                _CACHE.clear()
            _CACHE[m.group()] = result
        return result
    start = cur.pos
    name = cur.match(_ITEM)
    if name is not None:
        macro = _MACROS.get(name.upper())
        if macro is not None:
            return macro
        cur.pos = start
    return _fetch_item(cur)


def _fetch_item(cur: Cursor) -> tuple[FetchItem, ...]:
    name = cur.match(_ITEM)
    if name is None:
        raise ParseError("expected a fetch item")
    name = name.upper()
    if cur.peek() != "[":
        simple = _SIMPLE.get(name)
        if simple is None:
            raise ParseError(f"unknown fetch item {name}")
        return simple
    sectioned = _SECTIONED.get(name)
    if sectioned is None:
        raise ParseError(f"unknown fetch item {name}")
    item, peek, binary = sectioned
    cur.pos += 1
    section = _binary_section(cur) if binary else _section(cur)
    partial = None
    if item != "BINARY.SIZE":
        m = _PARTIAL.match(cur.s, cur.pos)
        if m is not None:
            offset, length = int(m.group(1)), int(m.group(2))
            if length == 0 or offset > MAX_NUMBER64 or length > MAX_NUMBER64:
                raise ParseError("invalid partial")
            cur.pos = m.end()
            partial = (offset, length)
        elif cur.peek() == "<":
            raise ParseError("invalid partial")
    return (FetchItem(item, section, peek, partial),)


def _binary_section(cur: Cursor) -> Section:
    """section-binary = "[" [section-part] "]" (the "[" already read)."""
    if cur.skip("]"):
        return _WHOLE
    part = cur.match(_PART)
    if part is None:
        raise ParseError("invalid binary section")
    cur.expect("]", "]")
    return Section(tuple(int(n) for n in part.split(".")))


def _section(cur: Cursor) -> Section:
    """section-spec after "[", up to and including "]"."""
    if cur.skip("]"):
        return _WHOLE
    numbers: tuple[int, ...] = ()
    part = cur.match(_PART)
    if part is not None:
        numbers = tuple(int(n) for n in part.split("."))
        if cur.skip("]"):
            return Section(numbers)
        cur.expect(".", "a section")
    m = _MSGTEXT.match(cur.s, cur.pos)
    if m is None:
        raise ParseError("invalid section")
    cur.pos = m.end()
    text = m.group(1).upper()
    if text == "MIME" and not numbers:
        raise ParseError("MIME needs a part number")
    fields: tuple[str, ...] = ()
    if text.startswith("HEADER.FIELDS"):
        cur.sp()
        cur.open()
        names = [cur.astring().upper()]
        while cur.skip(" "):
            names.append(cur.astring().upper())
        cur.close()
        fields = tuple(names)
    cur.expect("]", "]")
    return Section(numbers, text, fields)


# -- SEARCH -----------------------------------------------------------------------------------

_FLAG_KEYS: Final = frozenset(
    (
        "ALL",
        "ANSWERED",
        "DELETED",
        "DRAFT",
        "FLAGGED",
        "NEW",
        "OLD",
        "RECENT",
        "SEEN",
        "UNANSWERED",
        "UNDELETED",
        "UNDRAFT",
        "UNFLAGGED",
        "UNSEEN",
    )
)
_FLAG_KEY_VALUES: Final = {name: SearchKey(name) for name in _FLAG_KEYS}
_STRING_KEYS: Final = frozenset(("BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"))
_DATE_KEYS: Final = frozenset(("BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"))
_SEARCH_WORD = re.compile(r"[A-Za-z]+")
_ENTRY_TYPE: Final = frozenset(("PRIV", "SHARED", "ALL"))


def search_keys(cur: Cursor) -> tuple[SearchKey, ...]:
    """1*(search-key) separated by spaces, to the end of the command."""
    keys = [_search_key(cur, 0)]
    while cur.skip(" "):
        keys.append(_search_key(cur, 0))
    return tuple(keys)


def _search_key(cur: Cursor, depth: int) -> SearchKey:
    if depth > MAX_DEPTH:
        raise ParseError("search keys nested too deep")
    first = cur.peek()
    if first == "(":
        cur.pos += 1
        children = [_search_key(cur, depth + 1)]
        while cur.skip(" "):
            children.append(_search_key(cur, depth + 1))
        cur.close()
        return SearchKey("AND", children=tuple(children))
    if first.isdigit() or first in ("*", "$"):
        return SearchKey("SEQSET", sequence=cur.sequence_set())
    word = cur.match(_SEARCH_WORD)
    if word is None:
        raise ParseError("expected a search key")
    name = word.upper()
    flag = _FLAG_KEY_VALUES.get(name)
    if flag is not None:
        return flag
    if cur.peek() != " ":
        raise ParseError(f"unknown search key {name}" if name not in _ARGS else "missing argument")
    if name not in _ARGS:
        raise ParseError(f"unknown search key {name}")
    cur.pos += 1
    if name in _STRING_KEYS:
        return SearchKey(name, value=cur.astring())
    if name in _DATE_KEYS:
        return SearchKey(name, date=cur.date())
    if name in ("KEYWORD", "UNKEYWORD"):
        return SearchKey(name, value=cur.atom("a keyword"))
    if name in ("LARGER", "SMALLER"):
        return SearchKey(name, number=cur.number(MAX_NUMBER64))
    if name in ("YOUNGER", "OLDER"):
        return SearchKey(name, number=cur.number(nonzero=True))
    if name == "UID":
        return SearchKey(name, sequence=cur.sequence_set())
    if name == "HEADER":
        field = cur.astring()
        cur.sp()
        return SearchKey(name, header=field, value=cur.astring())
    if name == "NOT":
        return SearchKey(name, children=(_search_key(cur, depth + 1),))
    if name == "OR":
        left = _search_key(cur, depth + 1)
        cur.sp()
        return SearchKey(name, children=(left, _search_key(cur, depth + 1)))
    return _modseq(cur)


def _modseq(cur: Cursor) -> SearchKey:
    """MODSEQ [SP entry-name SP entry-type-req] SP mod-sequence-valzer (RFC 7162 3.1.5);
    the entry name and type are read and dropped (qtoaster keeps one modseq per message)."""
    if cur.peek() == '"':
        entry = cur.string()
        if not entry.startswith("/flags/"):
            raise ParseError("invalid MODSEQ entry name")
        cur.sp()
        if cur.keyword() not in _ENTRY_TYPE:
            raise ParseError("invalid MODSEQ entry type")
        cur.sp()
    return SearchKey("MODSEQ", number=cur.number(MAX_NUMBER64))


_ARGS: Final = (
    _STRING_KEYS
    | _DATE_KEYS
    | frozenset(
        (
            "KEYWORD",
            "UNKEYWORD",
            "LARGER",
            "SMALLER",
            "YOUNGER",
            "OLDER",
            "UID",
            "HEADER",
            "NOT",
            "OR",
            "MODSEQ",
        )
    )
)
