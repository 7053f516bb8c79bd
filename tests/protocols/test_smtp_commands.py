"""Command-line grammar and ESMTP parameters (spec 3.1, 5)."""

from __future__ import annotations

import pytest

from qtoaster.protocols.smtp.commands import (
    SIZE_CAP,
    CommandLine,
    parse_command_line,
    parse_parameters,
    parse_size,
)


@pytest.mark.parametrize(
    ("line", "verb", "argument"),
    [
        (b"MAIL FROM:<a@b>\r", "MAIL", "FROM:<a@b>"),
        (b"mail FROM:<a@b>", "MAIL", "FROM:<a@b>"),
        (b"EHLO    host name  \r", "EHLO", "host name  "),
        (b"QUIT\r\r", "QUIT\r", ""),  # only one CR is stripped: "QUIT\r" is the verb
        (b"", "", ""),
        (b" NOOP", "", "NOOP"),
        (b"NOOP\tx", "NOOP\tX", ""),  # only spaces separate
        (b"RCPT TO:<a\0b>", "RCPT", "TO:<a"),  # NUL ends the line, as in qmail's C strings
        (b"qu\xc4\xb1t", "QU\u0131T", ""),  # dotless i is not I: no Unicode case folding
        (b"VRFY \xff", "VRFY", "\udcff"),
    ],
)
def test_parse_command_line(line: bytes, verb: str, argument: str) -> None:
    assert parse_command_line(line) == CommandLine(verb, argument)


def test_parameters() -> None:
    parsed = parse_parameters(["size=1000", "body=8bitmime", "SMTPUTF8", "AUTH=<>", "x=a=b"])
    assert parsed.params == {
        "SIZE": "1000",
        "BODY": "8bitmime",
        "SMTPUTF8": None,
        "AUTH": "<>",
        "X": "a=b",
    }
    assert parsed.size == 1000
    assert parsed.body == "8BITMIME"


def test_parameters_later_duplicate_wins_and_empty() -> None:
    parsed = parse_parameters(["SIZE=1", "SIZE=2"])
    assert parsed.size == 2
    empty = parse_parameters([])
    assert (empty.params, empty.size, empty.body) == ({}, None, None)


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("123", 123),
        ("123abc", 123),  # non-digits end the number (spec 5)
        ("0", 0),
        ("abc", None),
        ("", None),
        (None, None),
        ("-5", None),
        ("9" * 20, SIZE_CAP),
        ("9" * 5000, SIZE_CAP),  # never reaches int()'s digit limit
        ("\u0661\u0662", None),  # Arabic-Indic digits are not digits here
    ],
)
def test_parse_size(value: str | None, size: int | None) -> None:
    assert parse_size(value) == size
