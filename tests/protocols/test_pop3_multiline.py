"""The streamed multiline writer (CRLF, dot-stuffing across chunks) and WireSizer."""

from __future__ import annotations

import pytest

from qtoaster.protocols.pop3.multiline import MultilineEncoder, WireSizer, wire_size
from qtoaster.protocols.pop3.server import Pop3Connection, Pop3ProtocolError


def encode(chunks: list[bytes]) -> tuple[bytes, int]:
    encoder = MultilineEncoder()
    out = b"".join(encoder.encode(c) for c in chunks) + encoder.end()
    return out, encoder.stuffed


@pytest.mark.parametrize(
    ("message", "wire"),
    [
        (b"", b".\r\n"),
        (b"a\n", b"a\r\n.\r\n"),
        (b"a\r\n", b"a\r\n.\r\n"),
        (b"a", b"a\r\n.\r\n"),  # missing final newline
        (b"a\r", b"a\r\n.\r\n"),  # a trailing CR gets its LF only
        (b".\n", b"..\r\n.\r\n"),
        (b".a\n..b\nc.\n", b"..a\r\n...b\r\nc.\r\n.\r\n"),
        (b"a\r\r\nb\rc\n", b"a\r\r\nb\rc\r\n.\r\n"),  # bare CRs pass unchanged
        (b"\n\n.", b"\r\n\r\n..\r\n.\r\n"),
    ],
)
def test_encoding(message: bytes, wire: bytes) -> None:
    assert encode([message])[0] == wire


MESSAGE = b".top\nline\r\n.dot\r\n\r\n.\n..\nx\r.y\nend."


@pytest.mark.parametrize("cut", range(len(MESSAGE) + 1))
def test_chunk_boundaries_do_not_matter(cut: int) -> None:
    whole = encode([MESSAGE])
    assert encode([MESSAGE[:cut], MESSAGE[cut:]]) == whole
    assert encode([MESSAGE[i : i + 1] for i in range(len(MESSAGE))]) == whole
    assert encode([b"", MESSAGE[:cut], b"", MESSAGE[cut:], b""]) == whole


def test_stuffing_across_a_crlf_split_between_chunks() -> None:
    assert encode([b"a\r", b"\n.b"])[0] == b"a\r\n..b\r\n.\r\n"
    assert encode([b"a\n", b".", b"b"])[0] == b"a\r\n..b\r\n.\r\n"


@pytest.mark.parametrize(
    "message", [b"", b"a", b"a\n", b"a\r", b"a\r\n", MESSAGE, b"\r\n.\r\n", b"\r\r\n\n"]
)
def test_wire_size_is_the_bytes_sent_minus_stuffing_and_terminator(message: bytes) -> None:
    out, stuffed = encode([message])
    assert wire_size([message]) == len(out) - stuffed - 3
    for cut in range(len(message) + 1):
        sizer = WireSizer()
        sizer.update(message[:cut])
        sizer.update(message[cut:])
        assert sizer.size == wire_size([message])


def test_size_counts_crlf_octets() -> None:
    assert wire_size([b"a\nb\n"]) == 6
    assert wire_size([b"a\r\nb"]) == 6


def test_connection_streaming() -> None:
    conn = Pop3Connection()
    conn.receive_data(b"USER a\r\nPASS b\r\nRETR 1\r\n")
    conn.next_event()
    conn.ok()
    conn.next_event()
    conn.logged_in()
    conn.next_event()
    conn.data_to_send()
    conn.send_multiline_start()
    with pytest.raises(Pop3ProtocolError):
        conn.next_event()  # the answer is not finished
    with pytest.raises(Pop3ProtocolError):
        conn.ok()
    conn.send_multiline_chunk(b"x\n.")
    conn.send_multiline_chunk(b"y")
    conn.send_multiline_end()
    assert conn.data_to_send() == b"+OK \r\nx\r\n..y\r\n.\r\n"
    with pytest.raises(Pop3ProtocolError):
        conn.send_multiline_chunk(b"late")
