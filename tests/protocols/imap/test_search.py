"""SEARCH evaluation: every key kind, against real parsed messages."""

from __future__ import annotations

import datetime
import io
from pathlib import Path
from typing import BinaryIO

import pytest

from qtoaster.maildir.storeapi import SEEN, MessageMeta
from qtoaster.protocols.imap.commands import STAR, SearchKey, SequenceSet
from qtoaster.protocols.imap.message import MimePart, parse_message
from qtoaster.protocols.imap.search import SearchContext, decode_header, evaluate, needs

HERE = Path(__file__).parent
UTC = datetime.UTC
# 2024-03-10 23:30 UTC
T = datetime.datetime(2024, 3, 10, 23, 30, tzinfo=UTC).timestamp()


def ctx(data: bytes = b"", **meta: object) -> tuple[SearchContext, list[int]]:
    opened: list[int] = []

    def load() -> tuple[BinaryIO, MimePart]:
        opened.append(1)
        s = io.BytesIO(data)
        return s, parse_message(s)

    fields: dict[str, object] = {
        "uid": 7,
        "flags": frozenset({SEEN, "$Junk"}),
        "modseq": 20,
        "size": 500,
        "internaldate": T,
    }
    fields.update(meta)
    m = MessageMeta(**fields)  # type: ignore[arg-type]
    return SearchContext(
        seq=3, meta=m, max_seq=5, max_uid=9, saved={7}, load=load, now=T + 100, tz=UTC
    ), opened


def key(name: str, **kw: object) -> SearchKey:
    return SearchKey(name, **kw)  # type: ignore[arg-type]


def seq(*ranges: tuple[int, int]) -> SequenceSet:
    return SequenceSet(ranges)


@pytest.mark.parametrize(
    ("k", "want"),
    [
        (key("ALL"), True),
        (key("SEEN"), True),
        (key("UNSEEN"), False),
        (key("ANSWERED"), False),
        (key("UNANSWERED"), True),
        (key("DELETED"), False),
        (key("UNDELETED"), True),
        (key("DRAFT"), False),
        (key("UNDRAFT"), True),
        (key("FLAGGED"), False),
        (key("UNFLAGGED"), True),
        (key("KEYWORD", value="$junk"), True),
        (key("UNKEYWORD", value="$Junk"), False),
        (key("RECENT"), False),
        (key("OLD"), True),
        (key("NEW"), False),
        (key("LARGER", number=499), True),
        (key("LARGER", number=500), False),
        (key("SMALLER", number=501), True),
        (key("MODSEQ", number=20), True),
        (key("MODSEQ", number=21), False),
        (key("SEQSET", sequence=seq((3, 3))), True),
        (key("SEQSET", sequence=seq((4, STAR))), False),
        (key("SEQSET", sequence=seq((STAR, 2))), True),
        (key("UID", sequence=seq((1, 6), (8, STAR))), False),
        (key("UID", sequence=seq((STAR, 7))), True),
        (key("UID", sequence=SequenceSet((), saved=True)), True),
        (key("BEFORE", date=datetime.date(2024, 3, 11)), True),
        (key("BEFORE", date=datetime.date(2024, 3, 10)), False),
        (key("ON", date=datetime.date(2024, 3, 10)), True),
        (key("SINCE", date=datetime.date(2024, 3, 10)), True),
        (key("SINCE", date=datetime.date(2024, 3, 11)), False),
        (key("YOUNGER", number=100), True),
        (key("YOUNGER", number=99), False),
        (key("OLDER", number=100), True),
        (key("NOT", children=(key("SEEN"),)), False),
        (key("OR", children=(key("DRAFT"), key("SEEN"))), True),
        (key("AND", children=(key("DRAFT"), key("SEEN"))), False),
    ],
)
def test_meta_keys_never_open_the_file(k: SearchKey, want: bool) -> None:
    c, opened = ctx()
    assert needs([k]) == "meta"
    assert evaluate([k], c) is want
    assert opened == []


MIXED = (HERE / "messages" / "mixed.eml").read_bytes()
NESTED = (HERE / "messages" / "nested.eml").read_bytes()
ENCODED = (HERE / "messages" / "encoded.eml").read_bytes()
ALT = (HERE / "messages" / "alternative.eml").read_bytes()
PLAIN = (HERE / "messages" / "plain.eml").read_bytes()


@pytest.mark.parametrize(
    ("data", "k", "want"),
    [
        (MIXED, key("FROM", value="doe, JOHN"), True),
        (MIXED, key("TO", value="x@EXAMPLE"), True),
        (MIXED, key("CC", value="x"), False),
        (MIXED, key("SUBJECT", value="ATTACHMENT"), True),
        (MIXED, key("HEADER", header="Content-Type", value="multipart"), True),
        (MIXED, key("HEADER", header="X-Missing", value=""), False),
        (MIXED, key("HEADER", header="subject", value=""), True),
        (ENCODED, key("SUBJECT", value="grüße"), True),
        (ENCODED, key("FROM", value="JÜRGEN"), True),
        (ENCODED, key("BCC", value="a"), False),
        (PLAIN, key("SENTON", date=datetime.date(1996, 7, 17)), True),
        (PLAIN, key("SENTBEFORE", date=datetime.date(1996, 7, 17)), False),
        (PLAIN, key("SENTSINCE", date=datetime.date(1996, 7, 17)), True),
        (ENCODED, key("SENTSINCE", date=datetime.date(1970, 1, 1)), False),
    ],
)
def test_header_keys(data: bytes, k: SearchKey, want: bool) -> None:
    c, opened = ctx(data)
    assert needs([k]) == "header"
    assert evaluate([k], c) is want
    assert opened == [1]


@pytest.mark.parametrize(
    ("data", "k", "want"),
    [
        (MIXED, key("BODY", value="SEE ATTACHED"), True),
        (MIXED, key("BODY", value="hello world"), False),  # in a base64 PDF: not text
        (ALT, key("BODY", value="héllo there"), True),  # quoted-printable, soft break
        (ALT, key("BODY", value="preamble"), False),
        (NESTED, key("BODY", value="inner text\r\nline"), True),
        (NESTED, key("BODY", value="inner@example"), False),
        (NESTED, key("TEXT", value="inner@example"), True),
        (NESTED, key("TEXT", value="fwd"), True),
        (NESTED, key("BODY", value=""), True),
    ],
)
def test_body_keys(data: bytes, k: SearchKey, want: bool) -> None:
    c, _ = ctx(data)
    assert needs([key("SEEN"), k]) == "body"
    assert evaluate([k], c) is want


def test_body_match_across_chunks_and_charsets() -> None:
    body = ("a" * 70000 + "Köln").encode("iso-8859-1")
    msg = b"Content-Type: text/plain; charset=iso-8859-1\n\n" + body
    c, _ = ctx(msg)
    assert evaluate([key("BODY", value="aaköln")], c)
    c, _ = ctx(msg)
    assert not evaluate([key("BODY", value="kölner")], c)


def test_the_file_is_opened_once() -> None:
    c, opened = ctx(MIXED)
    keys = [key("FROM", value="john"), key("SUBJECT", value="with"), key("BODY", value="see")]
    assert evaluate(keys, c)
    assert opened == [1]


def test_needs_looks_inside_not_and_or() -> None:
    assert (
        needs([key("NOT", children=(key("OR", children=(key("SEEN"), key("TEXT", value="x"))),))])
        == "body"
    )
    assert needs([key("NOT", children=(key("SUBJECT", value="x"),))]) == "header"


def test_decode_header() -> None:
    assert decode_header(b"=?utf-8?q?a_b?= =?utf-8?b?w7w=?= c") == "a bü c"
    assert decode_header(b"=?nonesuch?q?x?=") == "x"
    assert decode_header(b"\xff plain") == "\ufffd plain"
