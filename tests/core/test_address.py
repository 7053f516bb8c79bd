"""qmail's addrparse rules (spec 3.3)."""

from __future__ import annotations

import pytest

from qtoaster.core.address import (
    MAX_ADDRESS_BYTES,
    AddressSyntaxError,
    parse_mail_argument,
    parse_path,
)


@pytest.mark.parametrize(
    ("argument", "address"),
    [
        ("FROM:<alice@example.com>", "alice@example.com"),
        ("FROM:<>", ""),
        ("TO:<postmaster>", "postmaster"),
        ("from: <a@b>", "a@b"),
        ("<a@b>", "a@b"),  # FROM: is not checked
        ("FROM:<a@b", "a@b"),  # unterminated: taken to the end ("why bother")
        ("junk <a@b> more", "a@b"),
        ("TO:<@relay.one,@relay.two:bob@example.com>", "bob@example.com"),
        ("TO:<@relay.one>", ""),  # no ':' after the route: everything is route
        ('TO:<"john doe"@example.com>', "john doe@example.com"),
        ('TO:<"a>b"@example.com>', "a>b@example.com"),
        ("TO:<a\\>b@example.com>", "a>b@example.com"),
        ('TO:<a\\"b@example.com>', 'a"b@example.com'),
        ("TO:<a\\\\b@example.com>", "a\\b@example.com"),
        # Without '<': after the first ':', spaces skipped, ended by a space (RFC 821 partner).
        ("FROM:alice@example.com", "alice@example.com"),
        ("FROM:   alice@example.com SIZE=10", "alice@example.com"),
        ("TO:@route:bob@example.com", "bob@example.com"),
        ("nothing", ""),
        ("", ""),
        ("FROM:<\udcff@example.com>", "\udcff@example.com"),  # any byte survives
    ],
)
def test_parse_path(argument: str, address: str) -> None:
    assert parse_path(argument) == address


@pytest.mark.parametrize(
    ("argument", "words"),
    [
        ("FROM:<a@b> SIZE=100  BODY=8BITMIME", ["SIZE=100", "BODY=8BITMIME"]),
        ("FROM:<a@b>SIZE=1", ["SIZE=1"]),
        ("FROM:<a@b>", []),
        ("FROM:a@b SIZE=5", ["SIZE=5"]),
        ('FROM:<"x> y"@b> AUTH=<>', ["AUTH=<>"]),
        ("FROM:<a@b", []),
    ],
)
def test_parse_mail_argument_words(argument: str, words: list[str]) -> None:
    assert parse_mail_argument(argument)[1] == words


def test_limit_is_900_bytes() -> None:
    ok = "a" * (MAX_ADDRESS_BYTES - 4) + "@b.c"
    assert parse_path(f"<{ok}>") == ok
    with pytest.raises(AddressSyntaxError):
        parse_path(f"<x{ok}>")


def test_limit_counts_bytes_not_characters() -> None:
    # 450 two-byte characters = 900 bytes: fine; one more byte: refused.
    assert len(parse_path("<" + "\u00e9" * 450 + ">")) == 450
    with pytest.raises(AddressSyntaxError):
        parse_path("<" + "\u00e9" * 450 + "x>")
    with pytest.raises(AddressSyntaxError):
        parse_path("<" + "\udcff" * 901 + ">")


def test_limit_applies_after_unquoting() -> None:
    quoted = '"' + "a" * 899 + '"b'
    assert parse_path(f"<{quoted}>") == "a" * 899 + "b"
