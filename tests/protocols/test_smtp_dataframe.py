"""DATA framing: transparency, the end marker, bare LF, hops, chunk boundaries (spec 3.6)."""

from __future__ import annotations

import pytest

from qtoaster.protocols.smtp.dataframe import BareLineFeed, DataFramer, HopCounter


def frame(*chunks: bytes) -> tuple[bytes, int, bytes]:
    """(message, hops, bytes after the end) for chunks fed in order."""
    framer = DataFramer()
    out = bytearray()
    for i, chunk in enumerate(chunks):
        framed = framer.feed(chunk)
        out += framed.payload
        if framed.end is not None:
            return bytes(out), framer.hops, chunk[framed.end :] + b"".join(chunks[i + 1 :])
    raise AssertionError("no end")


def every_split(raw: bytes) -> list[tuple[bytes, ...]]:
    return (
        [(raw,)]
        + [(raw[:i], raw[i:]) for i in range(len(raw) + 1)]
        + [tuple(raw[i : i + 1] for i in range(len(raw)))]
    )


@pytest.mark.parametrize(
    ("raw", "message", "rest"),
    [
        (b".\r\n", b"", b""),
        (b"a\r\n.\r\nQUIT\r\n", b"a\n", b"QUIT\r\n"),
        (b"..\r\n.\r\n", b".\n", b""),
        (b".a\r\n..b\r\n.\r\n", b"a\n.b\n", b""),
        (b"a\rb\r\n.\r\n", b"a\rb\n", b""),  # lone CR kept
        (b"a\r.\r\n.\r\n", b"a\r.\n", b""),  # CR. is no line start
        (b"\r\r\n.\r\n", b"\r\n", b""),
        (b".\rx\r\n.\r\n", b".\rx\n", b""),  # qmail keeps the dot before a CR
        (b"a\r\n.\r\r\n.\r\n", b"a\n.\r\n", b""),
        (b"a\r\n.x\r\n.\r\n\r\n.\r\n", b"a\nx\n", b"\r\n.\r\n"),
    ],
)
def test_framing_in_every_split(raw: bytes, message: bytes, rest: bytes) -> None:
    for chunks in every_split(raw):
        assert frame(*chunks)[0::2] == (message, rest), chunks


@pytest.mark.parametrize(
    "raw",
    [b"a\n", b"a\r\n\n", b"a\r\n.\n", b"a\n.\n", b"\n", b".\n", b"a\r\n.\r\r\n\n"],
)
def test_bare_lf_raises_in_every_split(raw: bytes) -> None:
    for chunks in every_split(raw + b"\r\n.\r\n"):
        framer = DataFramer()
        with pytest.raises(BareLineFeed):
            for chunk in chunks:
                framer.feed(chunk)


def test_bare_lf_after_the_end_is_not_ours() -> None:
    assert frame(b"a\r\n.\r\nNOOP\n") == (b"a\n", 0, b"NOOP\n")


def test_holds_back_at_most_four_bytes() -> None:
    framer = DataFramer()
    assert framer.feed(b"abc\r\n.\r").payload == b"abc"
    assert framer.feed(b"x").payload == b"\n.\rx"
    assert framer.feed(b"\r").payload == b""
    assert framer.feed(b"\n").payload == b""
    assert framer.feed(b"y\r\n").payload == b"\ny"


def test_hops_count_header_lines_only() -> None:
    raw = (
        b"Received: a\r\nreceived:b\r\nDELIVERED-TO: c\r\nDelivered\r\nReceive: no\r\n"
        b" Received: no\r\nX-Received: no\r\n\r\nReceived: body\r\n.\r\n"
    )
    for chunks in every_split(raw):
        assert frame(*chunks)[1] == 4


def test_hops_only_first_nine_bytes_matter() -> None:
    counter = HopCounter()
    counter.feed(b"Received" + b"x" * 100_000 + b"\r\n")
    counter.feed(b"Delivered" + b"y" * 10 + b"\r\n\r\nReceived\r\n")
    assert counter.hops == 2


def test_hops_stop_at_first_empty_line_even_if_message_ends() -> None:
    assert frame(b"Received: 1\r\n.\r\n")[1] == 1
    assert frame(b"\r\nReceived: 1\r\n.\r\n")[1] == 0


def test_large_message_in_chunks_is_exact() -> None:
    lines = [b"Received: x"] * 3 + [b""] + [b"%d .line" % i for i in range(20_000)]
    lines += [b".starts with dot"] * 100
    message = b"".join(line + b"\n" for line in lines)
    wire = b"".join((b"." if line.startswith(b".") else b"") + line + b"\r\n" for line in lines)
    wire += b".\r\n"
    chunks = [wire[i : i + 8191] for i in range(0, len(wire), 8191)]
    got, hops, rest = frame(*chunks)
    assert (got, hops, rest) == (message, 3, b"")


def test_feed_after_end_is_an_error() -> None:
    framer = DataFramer()
    framer.feed(b".\r\n")
    with pytest.raises(ValueError):
        framer.feed(b"x")
