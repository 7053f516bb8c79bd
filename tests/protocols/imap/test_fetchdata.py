"""ENVELOPE and BODY/BODYSTRUCTURE against Dovecot 2.3's answers for the same messages.

golden/<name>.structure is what ``FETCH 1 (BODYSTRUCTURE BODY ENVELOPE RFC822.SIZE)``
answered from a Maildir holding messages/<name>.eml (CR removed from the response).
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qtoaster.protocols.imap.fetchdata import bodystructure, envelope, parse_addresses
from qtoaster.protocols.imap.message import parse_header, parse_message

HERE = Path(__file__).parent
NAMES = sorted(p.stem for p in (HERE / "messages").glob("*.eml"))


def fetch_line(data: bytes) -> bytes:
    part = parse_message(io.BytesIO(data))
    return b"* 1 FETCH (RFC822.SIZE %d BODYSTRUCTURE %b BODY %b ENVELOPE %b)" % (
        part.header_size + part.body_size,
        bodystructure(part, True),
        bodystructure(part, False),
        envelope(part),
    )


@pytest.mark.parametrize("name", NAMES)
def test_structure_as_dovecot(name: str) -> None:
    data = (HERE / "messages" / f"{name}.eml").read_bytes()
    want = (HERE / "golden" / f"{name}.structure").read_bytes().rstrip(b"\n")
    assert fetch_line(data).replace(b"\r\n", b"\n") == want


@pytest.mark.parametrize("name", NAMES)
def test_envelope_from_the_header_alone(name: str) -> None:
    data = (HERE / "messages" / f"{name}.eml").read_bytes()
    assert envelope(parse_header(io.BytesIO(data))) == envelope(parse_message(io.BytesIO(data)))


def test_rfc9051_example_envelope() -> None:
    data = (HERE / "messages" / "plain.eml").read_bytes()
    assert envelope(parse_message(io.BytesIO(data))) == (
        b'("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" "IMAP4rev1 WG mtg summary and minutes" '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'((NIL NIL "imap" "cac.washington.edu")) '
        b'((NIL NIL "minutes" "CNRI.Reston.VA.US")("John Klensin" NIL "KLENSIN" "MIT.EDU")) '
        b'NIL NIL "<B27397-0100000@cac.washington.edu>")'
    )


def test_eight_bit_header_goes_as_literal() -> None:
    env = envelope(parse_message(io.BytesIO(b"Subject: Gr\xc3\xbc\xc3\x9fe\n\n")))
    assert env.startswith(b"(NIL {7}\r\nGr\xc3\xbc\xc3\x9fe NIL")


def test_quotes_and_backslashes_are_escaped() -> None:
    env = envelope(parse_message(io.BytesIO(b'Subject: a "b" \\c\n\n')))
    assert env.startswith(b'(NIL "a \\"b\\" \\\\c" NIL')


@pytest.mark.parametrize(
    ("value", "want"),
    [
        (b"a@b", [(None, None, b"a", b"b")]),
        (b'"Last, First" <x@y>', [(b"Last, First", None, b"x", b"y")]),
        (b"x@y (Comment)", [(b"Comment", None, b"x", b"y")]),
        (b"G:;", [(None, None, b"G", None), (None, None, None, None)]),
        (b"<@r1,@r2:u@h>", [(None, b"@r1,@r2", b"u", b"h")]),
        (b"@h", [(None, None, b"MISSING_MAILBOX", b"h")]),
        (b"", []),
        (b",,,", []),
    ],
)
def test_addresses(value: bytes, want: list[object]) -> None:
    assert parse_addresses(value) == want


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_any_header_bytes_give_an_envelope(data: bytes) -> None:
    for head in (b"From: ", b"To: ", b"Subject: ", b""):
        part = parse_message(io.BytesIO(head + data))
        assert envelope(part).startswith(b"(")
        assert bodystructure(part, True).startswith(b"(")
        assert bodystructure(part, False).startswith(b"(")
