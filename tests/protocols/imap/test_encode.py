"""Wire encodings of values and modified UTF-7."""

from __future__ import annotations

import datetime
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qtoaster.protocols.imap.encode import (
    astring,
    flag_list,
    imap_date,
    literal,
    mutf7_decode,
    mutf7_encode,
    nstring,
    quoted,
)


def test_strings() -> None:
    assert quoted("a b") == b'"a b"'
    assert quoted(b'a"\\') == b'"a\\"\\\\"'
    assert quoted("ü") == b"{2}\r\n\xc3\xbc"
    assert quoted(b"a\r\nb") == b"{4}\r\na\r\nb"
    assert quoted(b"x" * 1001).startswith(b"{1001}\r\n")
    assert literal(b"") == b"{0}\r\n"
    assert astring("INBOX") == b"INBOX"
    assert astring("a b") == b'"a b"'
    assert astring("") == b'""'
    assert astring("x]") == b'"x]"'
    assert nstring(None) == b"NIL"
    assert nstring("") == b'""'


def test_flag_list_order() -> None:
    assert flag_list({"$Junk", "\\Seen", "\\Answered", "$A"}) == b"(\\Seen \\Answered $A $Junk)"
    assert flag_list([]) == b"()"


def test_imap_date_form() -> None:
    out = imap_date(837595465.0)
    assert re.fullmatch(rb'"[ 0-9]\d-[A-Z][a-z]{2}-\d{4} \d\d:\d\d:\d\d [+-]\d{4}"', out)
    local = datetime.datetime.fromtimestamp(837595465.0).astimezone()
    assert out[-6:-1] == local.strftime("%z").encode()
    assert out[4:7] == b"Jul"
    assert imap_date(1e20).startswith(b'" 1-Jan-1970')


@pytest.mark.parametrize(
    ("text", "wire"),
    [
        ("INBOX", "INBOX"),
        ("a&b", "a&-b"),
        ("Entwürfe", "Entw&APw-rfe"),
        ("台北", "&U,BTFw-"),
        ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
        ("😀", "&2D3eAA-"),
    ],
)
def test_mutf7_known(text: str, wire: str) -> None:
    assert mutf7_encode(text) == wire
    assert mutf7_decode(wire) == text


@pytest.mark.parametrize(
    "bad", ["&", "&Jjo", "&AGE-", "&Jjo-&Jjo-", "é", "&U,BTF2-", "&A-", "a\x01"]
)
def test_mutf7_invalid(bad: str) -> None:
    with pytest.raises(ValueError):
        mutf7_decode(bad)


@given(st.text(st.characters(blacklist_categories=("Cs",))))
def test_mutf7_round_trip(text: str) -> None:
    assert mutf7_decode(mutf7_encode(text)) == text


@given(st.text())
def test_mutf7_decode_never_crashes(text: str) -> None:
    try:
        mutf7_decode(text)
    except ValueError:
        pass
