"""POP3 dot-stuffing and message numbers: the fast paths agree with the obvious definitions.

``stuff_dots`` visits dots with ``find`` and falls back to ``bytes.replace`` after a few;
``frame_whole`` / ``Pop3Connection.send_message`` frame a whole message without the
streaming encoder; ``leading_number`` skips its digit loop for all-digit arguments.
Drawn inputs are heavy in dots, LFs and CRs so both sides of every fallback are taken.
"""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from qtoaster.protocols.pop3.commands import NUMBER_CAP, leading_number
from qtoaster.protocols.pop3.multiline import MultilineEncoder, frame_whole, stuff_dots
from qtoaster.protocols.pop3.server import Pop3Connection

dotty = st.lists(st.sampled_from([b".", b"\n", b"\r", b"a", b"..", b"\n."]), max_size=120).map(
    b"".join
)


def reference_stuffing(data: bytes, at_line_start: bool) -> bytes:
    out = data.replace(b"\n.", b"\n..")
    return b"." + out if at_line_start and out.startswith(b".") else out


@given(st.one_of(dotty, st.binary(max_size=200)), st.booleans())
def test_stuff_dots_is_replace(data: bytes, at_line_start: bool) -> None:
    assert stuff_dots(data, at_line_start) == reference_stuffing(data, at_line_start)


@given(dotty, st.lists(st.integers(min_value=0, max_value=120), max_size=6))
def test_encoder_output_does_not_depend_on_chunking(data: bytes, cuts: list[int]) -> None:
    def encode(chunks: list[bytes]) -> tuple[bytes, int]:
        encoder = MultilineEncoder()
        return b"".join(map(encoder.encode, chunks)) + encoder.end(), encoder.stuffed

    bounds = [0, *sorted(min(c, len(data)) for c in cuts), len(data)]
    whole, stuffed = encode([data])
    assert encode([data[a:b] for a, b in itertools.pairwise(bounds)]) == (whole, stuffed)
    # Unstuffing the body gives the CRLF form back (RFC 1939 3).
    body = whole[: -len(b".\r\n")]
    unstuffed = (b"\r\n" + body).replace(b"\r\n..", b"\r\n.")[2:]
    assert len(body) - len(unstuffed) == stuffed


@given(st.one_of(dotty, st.binary(max_size=200)))
def test_a_whole_message_is_framed_as_the_streaming_encoder_does(data: bytes) -> None:
    encoder = MultilineEncoder()
    streamed = encoder.encode(data) + encoder.end()
    assert b"".join(frame_whole(data)) == streamed

    def transaction() -> Pop3Connection:
        conn = Pop3Connection()
        conn.receive_data(b"USER u\r\nPASS p\r\nRETR 1\r\n")
        conn.next_event()
        conn.ok()
        conn.next_event()
        conn.logged_in()
        conn.next_event()
        conn.data_to_send()
        return conn

    whole, parts = transaction(), transaction()
    whole.send_message(data)
    parts.send_multiline_start()
    parts.send_multiline_chunk(data)
    parts.send_multiline_end()
    assert whole.data_to_send() == parts.data_to_send() == b"+OK \r\n" + streamed


def reference_number(text: str) -> tuple[int, int] | None:
    end = 0
    while end < len(text) and "0" <= text[end] <= "9":
        end += 1
    if end == 0:
        return None
    return (NUMBER_CAP if end > 20 else min(int(text[:end]), NUMBER_CAP)), end


@given(st.one_of(st.from_regex(r"\A0*[0-9]{1,25}\Z"), st.text(max_size=30)))
def test_leading_number_fast_path(text: str) -> None:
    assert leading_number(text) == reference_number(text)
