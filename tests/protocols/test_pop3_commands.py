"""The POP3 command grammar: message numbers (qmail's msgno), TOP, APOP."""

from __future__ import annotations

import pytest

from qtoaster.protocols.pop3.commands import (
    COUNTED_FROM_1,
    NUMBER_CAP,
    SYNTAX_ERROR,
    parse_message_number,
    parse_top,
    split_apop,
)


@pytest.mark.parametrize(
    ("argument", "result"),
    [
        ("1", 1),
        ("12abc", 12),  # scan_ulong reads the leading digits
        ("007", 7),
        ("0", COUNTED_FROM_1),
        ("000x", COUNTED_FROM_1),
        ("", SYNTAX_ERROR),
        ("x1", SYNTAX_ERROR),
        ("-1", SYNTAX_ERROR),
        ("+1", SYNTAX_ERROR),
        ("١", SYNTAX_ERROR),  # ASCII digits only
        ("9" * 5000, NUMBER_CAP),
    ],
)
def test_message_number(argument: str, result: int | str) -> None:
    assert parse_message_number(argument) == result


@pytest.mark.parametrize(
    ("argument", "result"),
    [
        ("1 5", (1, 5)),
        ("1    0", (1, 0)),
        ("1", (1, None)),
        ("1 x", (1, None)),
        ("1x 2", (1, None)),  # qmail: after n's digits only spaces are skipped
        ("0 1", COUNTED_FROM_1),
        ("", SYNTAX_ERROR),
    ],
)
def test_top(argument: str, result: tuple[int, int | None] | str) -> None:
    assert parse_top(argument) == result


def test_apop_split() -> None:
    assert split_apop("bob 0123") == ("bob", "0123")
    assert split_apop("bob  x y") == ("bob", " x y")  # qmail-popup splits at the first space
    assert split_apop("bob ") == ("bob", "")
    assert split_apop("bob") is None
