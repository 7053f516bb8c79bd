"""maildir.names: the one parser of Maildir++ file names (sizes, flags, the unique part)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qtoaster.maildir import names


@pytest.mark.parametrize(
    ("name", "unique", "digits", "flags"),
    [
        ("1700000000.P1Q2.host,S=1234", "1700000000.P1Q2.host,S=1234", "1234", ""),
        ("1700000000.P1Q2.host,S=1234:2,FS", "1700000000.P1Q2.host,S=1234", "1234", "FS"),
        ("a,S=12,W=14:2,ST", "a,S=12,W=14", "12", "ST"),
        ("a,S=1,S=22", "a,S=1,S=22", "22", ""),  # the last ,S= counts
        ("a,S=:2,T", "a,S=", "", "T"),  # a size field without digits
        ("a,S=7x:2,", "a,S=7x", "7", ""),
        ("plain", "plain", None, ""),
        ("a:2,ds", "a", None, ""),  # flags are capitals only (Courier)
        ("a:2,DRSx", "a", None, "DRS"),
        ("a:1,S", "a", None, ""),  # not a Maildir++ info
        ("b:2,S:2,T", "b", None, "S"),  # the first :2, counts
        ("c,S=9:2,S,S=5", "c,S=9", "9", "S"),  # only the part before the info
    ],
)
def test_name_parts(name: str, unique: str, digits: str | None, flags: str) -> None:
    assert names.unique(name) == unique
    assert names.size_digits(name) == digits
    assert names.flags(name) == flags


@given(st.text())
def test_any_name_parses(name: str) -> None:
    digits = names.size_digits(name)
    assert digits is None or (digits.isascii() and (digits == "" or digits.isdigit()))
    assert names.flags(name).isupper() or names.flags(name) == ""
    assert ":" not in names.unique(name)
