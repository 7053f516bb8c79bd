"""BODY[section]<partial> and BINARY[...] against Dovecot 2.3's answers, and sizes.

golden/<name>.sections is Dovecot's answer to FETCH of the sections in SECTIONS (as
BODY.PEEK) for messages/<name>.eml; the test builds the same response line from
section_chunks. The property tests check on any bytes that the announced size is the
number of bytes produced, for every section the message has.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qtoaster.protocols.imap.commands import Section
from qtoaster.protocols.imap.message import MimePart, parse_message
from qtoaster.protocols.imap.section import (
    UnknownCte,
    binary_chunks,
    binary_size,
    message_chunks,
    section_chunks,
)

HERE = Path(__file__).parent
NAMES = sorted(p.stem for p in (HERE / "messages").glob("*.eml"))
FIELDS = ("FROM", "SUBJECT")
SECTIONS: list[tuple[str, Section | None, tuple[int, int] | None]] = [
    ("BODY[]", None, None),
    ("BODY[HEADER]", Section(text="HEADER"), None),
    ("BODY[TEXT]", Section(text="TEXT"), None),
    ("BODY[1]", Section(part=(1,)), None),
    ("BODY[1.MIME]", Section(part=(1,), text="MIME"), None),
    ("BODY[2]", Section(part=(2,)), None),
    ("BODY[2.MIME]", Section(part=(2,), text="MIME"), None),
    ("BODY[2.HEADER]", Section(part=(2,), text="HEADER"), None),
    ("BODY[2.TEXT]", Section(part=(2,), text="TEXT"), None),
    ("BODY[2.1]", Section(part=(2, 1)), None),
    ("BODY[2.2]", Section(part=(2, 2)), None),
    ("BODY[3]", Section(part=(3,)), None),
    ("BODY[HEADER.FIELDS (FROM SUBJECT)]", Section(text="HEADER.FIELDS", fields=FIELDS), None),
    (
        "BODY[HEADER.FIELDS.NOT (FROM SUBJECT)]",
        Section(text="HEADER.FIELDS.NOT", fields=FIELDS),
        None,
    ),
    ("BODY[TEXT]<3>", Section(text="TEXT"), (3, 10)),
    ("BODY[]<100>", None, (100, 1000)),
]


def fetch(data: bytes) -> bytes:
    stream = io.BytesIO(data)
    part = parse_message(stream)
    items = []
    for label, section, partial in SECTIONS:
        size, chunks = section_chunks(stream, part, section, partial)
        body = b"".join(chunks)
        assert len(body) == size
        items.append(b"%b {%d}\r\n%b" % (label.encode(), size, body))
    return b"* 1 FETCH (" + b" ".join(items) + b")\r\n"


@pytest.mark.parametrize("name", NAMES)
def test_sections_as_dovecot(name: str) -> None:
    data = (HERE / "messages" / f"{name}.eml").read_bytes()
    assert fetch(data) == (HERE / "golden" / f"{name}.sections").read_bytes()


def whole(data: bytes, section: Section | None, partial: tuple[int, int] | None = None) -> bytes:
    stream = io.BytesIO(data)
    size, chunks = section_chunks(stream, parse_message(stream), section, partial)
    out = b"".join(chunks)
    assert len(out) == size
    return out


def test_lf_becomes_crlf_and_crlf_stays() -> None:
    assert whole(b"A: b\n\nx\r\ny\nz", None) == b"A: b\r\n\r\nx\r\ny\r\nz"
    assert whole(b"A: b\n\nx\r\ny\nz", Section(text="TEXT")) == b"x\r\ny\r\nz"


def test_partial_counts_the_crlf_form() -> None:
    msg = b"A: b\n\n0\n1\n2\n"
    assert whole(msg, Section(text="TEXT"), (1, 3)) == b"\r\n1"
    assert whole(msg, Section(text="TEXT"), (8, 5)) == b"\n"
    assert whole(msg, Section(text="TEXT"), (9, 5)) == b""
    assert whole(msg, None, (0, 1)) == b"A"


def test_big_region_crosses_chunks_without_splitting_crlf() -> None:
    body = (b"x" * 32767 + b"\r\n") * 5 + b"y\n" * 40000
    out = whole(b"S: 1\n\n" + body, Section(text="TEXT"))
    assert out == body.replace(b"y\n", b"y\r\n")


def test_missing_field_set_is_a_blank_line() -> None:
    assert whole(b"A: b\n\n", Section(text="HEADER.FIELDS", fields=("X",))) == b"\r\n"


def test_header_fields_keep_folding_and_repeats() -> None:
    msg = b"To: a,\n b\nX: 1\nto: c\n\nbody"
    want = b"To: a,\r\n b\r\nto: c\r\n\r\n"
    assert whole(msg, Section(text="HEADER.FIELDS", fields=("TO",))) == want


MIXED = (HERE / "messages" / "mixed.eml").read_bytes()
ALT = (HERE / "messages" / "alternative.eml").read_bytes()


def binary(data: bytes, numbers: tuple[int, ...], partial: tuple[int, int] | None = None) -> bytes:
    stream = io.BytesIO(data)
    part = parse_message(stream)
    size, chunks = binary_chunks(stream, part, numbers, partial)
    out = b"".join(chunks)
    assert len(out) == size == (binary_size(stream, part, numbers) if partial is None else size)
    return out


def test_binary_as_dovecot() -> None:
    assert binary(MIXED, (2,)) == b"Hello world! This is a PDF.\x00\x01\x02"
    assert binary(MIXED, (1,)) == b"see attached"
    assert binary(ALT, (1,)) == "Héllo there".encode()
    assert binary(ALT, (2,)) == b"<p>Hi</p>\r\n"
    assert binary(MIXED, (2,), (6, 5)) == b"world"
    assert binary(MIXED, (9,)) == b""


def test_binary_base64_is_lenient_and_chunked() -> None:
    payload = bytes(range(256)) * 1000
    import base64

    enc = base64.encodebytes(payload).replace(b"\n", b"\n\t!\n")
    msg = b"Content-Transfer-Encoding: BASE64\n\n" + enc
    assert binary(msg, (1,)) == payload


def test_binary_quoted_printable_soft_breaks() -> None:
    msg = b"Content-Transfer-Encoding: quoted-printable\n\na=3Db=\nc\r\nd=\r\ne\n"
    assert binary(msg, (1,)) == b"a=bc\r\nde\r\n"


def test_binary_unknown_encoding() -> None:
    msg = b"Content-Transfer-Encoding: x-uuencode\n\nbegin 644 x\n"
    stream = io.BytesIO(msg)
    with pytest.raises(UnknownCte):
        binary_chunks(stream, parse_message(stream), (1,), None)


def all_parts(part: MimePart, prefix: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    out = [prefix] if prefix else []
    kids = part.message.children if part.message is not None else part.children
    for i, child in enumerate(kids[:5], 1):
        out += all_parts(child, (*prefix, i))
    return out


_lines = st.sampled_from(
    [
        b"--b\n",
        b"--b--\n",
        b"--c\r\n",
        b"\n",
        b"\r\n",
        b"\r",
        b"x\n",
        b"Content-Type: ",
        b"multipart/mixed; boundary=b\n",
        b"multipart/mixed; boundary=c\n",
        b"message/rfc822\n",
        b"text/plain\n",
        b"Content-Transfer-Encoding: base64\n",
        b"QUJD\n",
        b" folded\n",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=400), st.lists(_lines, max_size=60).map(b"".join)))
def test_sizes_equal_the_bytes_produced(data: bytes) -> None:
    stream = io.BytesIO(data)
    root = parse_message(stream)
    assert root.header_size + root.body_size == len(data) + data.count(b"\n") - data.count(b"\r\n")
    sections: list[Section | None] = [None, Section(text="HEADER"), Section(text="TEXT")]
    for numbers in all_parts(root):
        for text in ("", "MIME", "HEADER", "TEXT", "HEADER.FIELDS"):
            sections.append(Section(part=numbers, text=text, fields=("CONTENT-TYPE",)))
    for section in sections:
        for partial in (None, (1, 7)):
            size, chunks = section_chunks(stream, root, section, partial)
            assert len(b"".join(chunks)) == size
    for numbers in all_parts(root):
        try:
            size, chunks = binary_chunks(stream, root, numbers, None)
        except UnknownCte:
            continue
        assert len(b"".join(chunks)) == size


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(st.binary(max_size=400), st.lists(_lines, max_size=60).map(b"".join)),
    st.sampled_from([0, 1, 7, 1 << 20]),
)
def test_message_chunks_equal_body_of_parsed_message(data: bytes, small: int) -> None:
    """BODY[] without parsing (FETCH's fast path) is byte for byte the parsed section,
    whether read at once or counted and streamed (``small``)."""
    stream = io.BytesIO(data)
    size, chunks = section_chunks(stream, parse_message(stream), None, None)
    expected = b"".join(chunks)
    size2, chunks2 = message_chunks(stream, small)
    assert (size2, b"".join(chunks2)) == (size, expected)


def test_message_chunks_crlf_split_across_reads() -> None:
    data = b"Subject: x\r" + b"\n" + b"a" * 70_000 + b"\r" + b"\nend\n"
    for small in (0, 10, 11, 12, 70_011, 1 << 20):
        stream = io.BytesIO(data)
        size, chunks = message_chunks(stream, small)
        out = b"".join(chunks)
        assert out == data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") and len(out) == size
