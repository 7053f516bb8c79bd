"""The one-pass MIME scan: offsets, CRLF sizes, line counts, bounds on hostile input."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from qtoaster.protocols.imap import message
from qtoaster.protocols.imap.message import MimePart, parse_header, parse_message

HERE = Path(__file__).parent


def parse(data: bytes) -> MimePart:
    return parse_message(io.BytesIO(data))


def test_lf_and_crlf_files_give_the_same_structure() -> None:
    lf = (HERE / "messages" / "nested.eml").read_bytes()
    a, b = parse(lf), parse(lf.replace(b"\n", b"\r\n"))

    def shape(p: MimePart) -> object:
        inner = shape(p.message) if p.message else None
        kids = [shape(c) for c in p.children]
        return (p.header_size, p.body_size, p.header_lines, p.body_lines, p.subtype, kids, inner)

    assert shape(a) == shape(b)


def test_offsets_and_sizes_of_a_multipart() -> None:
    data = b"Content-Type: multipart/mixed; boundary=b\n\npre\n--b\n\nx\ny\n--b--\nepi\n"
    root = parse(data)
    (child,) = root.children
    assert data[child.body_offset : child.body_end] == b"x\ny"
    assert (child.body_size, child.body_lines) == (4, 1)
    assert data[child.header_offset : child.body_offset] == b"\n"
    assert root.body_end == len(data)
    assert root.header_size == len(b"Content-Type: multipart/mixed; boundary=b\r\n\r\n")


def test_header_fields_are_raw_and_unfolded_on_demand() -> None:
    root = parse(b"Subject: a\n  b\nsubject: second\nX:y\n\n")
    assert root.raw_field(b"subject") == b"Subject: a\n  b\n"
    assert root.header(b"subject") == b"a  b"
    assert root.headers(b"subject") == [b"a  b", b"second"]
    assert root.header(b"x") == b"y"
    assert root.header(b"nope") is None


def test_content_type_parameters() -> None:
    root = parse(b'Content-Type: Text/Plain (c) ; charset="a\\"b" ;; name=x.txt\n\n')
    assert (root.ctype, root.subtype) == (b"Text", b"Plain")
    assert root.params == [(b"charset", b'a"b'), (b"name", b"x.txt")]
    bad = parse(b"Content-Type: garbage\n\n")
    assert (bad.ctype, bad.subtype, bad.has_ctype) == (b"text", b"plain", False)


def test_no_blank_line_means_all_header() -> None:
    root = parse(b"A: b\nC: d")
    assert (root.body_size, root.header_size) == (0, 10)


def test_nesting_beyond_the_limit_is_opaque() -> None:
    depth = message.MAX_DEPTH + 20
    head = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n" % (i, i) for i in range(depth)
    )
    root = parse(head + b"\ntext\n")
    d, p = 0, root
    while p.children:
        p, d = p.children[0], d + 1
    assert d == message.MAX_DEPTH


def test_parts_beyond_the_limit_are_opaque() -> None:
    data = b"Content-Type: multipart/mixed; boundary=b\n\n" + b"--b\n\nx\n" * (
        message.MAX_PARTS + 50
    )
    root = parse(data)
    assert len(root.children) == message.MAX_PARTS - 1
    assert root.body_end == len(data)


def test_a_huge_header_keeps_bounded_fields() -> None:
    data = b"".join(b"X-%d: %s\n" % (i, b"v" * 100) for i in range(20000)) + b"\nbody\n"
    root = parse(data)
    assert root.fields_truncated
    assert len(root.fields) <= message.MAX_FIELDS
    assert root.header_size == data.index(b"\n\n") + 2 + data[: data.index(b"\n\n") + 2].count(
        b"\n"
    )


def test_a_big_attachment_is_never_held_in_memory() -> None:
    att = b"QUJDRA==" * 9 + b"\n"
    head = b"Content-Type: multipart/mixed; boundary=zz\n\n"
    head += b"--zz\nContent-Type: text/plain\n\nhi\n--zz\n"
    head += b"Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"
    data = head + att * 150_000 + b"--zz--\n"  # ~11 MB
    stream = io.BytesIO(data)
    tracemalloc.start()
    root = parse_message(stream)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2_000_000
    assert root.children[1].body_lines == 149_999  # the last LF belongs to the boundary
    assert root.header_size + root.body_size == len(data) + data.count(b"\n")


def test_parse_header_stops_at_the_blank_line() -> None:
    stream = io.BytesIO(b"From: a@b\n\n" + b"x" * 1000)
    part = parse_header(stream)
    assert part.header(b"from") == b"a@b"
    assert stream.tell() == 11


def test_long_lines_are_read_in_pieces() -> None:
    line = b"y" * (message.MAX_LINE * 3 + 5)
    data = b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\n" + line + b"\r\n--b--\n"
    root = parse(data)
    assert root.children[0].body_size == len(line)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=2000))
def test_any_bytes_parse(data: bytes) -> None:
    root = parse(data)
    assert root.header_size + root.body_size == len(data) + data.count(b"\n") - data.count(b"\r\n")
