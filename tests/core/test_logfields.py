"""core.logfields: bare and quoted values, and the round trip the report relies on."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qtoaster.core.logfields import FieldError, fields, parse_fields, quote


def test_bare_values_stay_bare() -> None:
    assert (
        fields(msg="1a2b", client="192.0.2.7", size=1234) == "msg=1a2b client=192.0.2.7 size=1234"
    )


def test_none_is_left_out() -> None:
    assert fields(msg="x", auth=None) == "msg=x"


def test_reply_text_is_quoted_not_a_repr() -> None:
    assert fields(reply="550 5.1.1 sorry, no mailbox") == 'reply="550 5.1.1 sorry, no mailbox"'


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("", '""'),
        ("a=b", '"a=b"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("two\r\nlines", '"two\\r\\nlines"'),
        ("tab\there", '"tab\\there"'),
        ("bell\x07", '"bell\\x07"'),
        ("ls\u2028", '"ls\\u2028"'),
        ("back\\slash", "back\\slash"),
        ("caf\u00e9", "caf\u00e9"),
    ],
)
def test_quoting(value: str, written: str) -> None:
    assert quote(value) == written
    assert "\n" not in written and "\r" not in written
    assert parse_fields(f"k={written}") == {"k": value}


@pytest.mark.parametrize(
    "text", ['k="open', "k", "=v", "K=v", 'k="a"b', 'k="\\q"', 'k="\\x4"', 'k="\\U99999999"']
)
def test_malformed_is_a_field_error(text: str) -> None:
    with pytest.raises(FieldError):
        parse_fields(text)


keys = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True)


@given(st.dictionaries(keys, st.text(), max_size=6))
def test_any_values_round_trip(values: dict[str, str]) -> None:
    line = fields(**values)
    assert "\n" not in line and "\r" not in line
    assert parse_fields(line) == values


@given(st.text())
def test_parse_never_raises_anything_but_field_error(text: str) -> None:
    try:
        parse_fields(text)
    except FieldError:
        pass
