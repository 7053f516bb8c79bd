"""BDAT (RFC 3030) in ServerConnection beyond the golden transcripts: a refused first BDAT,
huge and truncated chunks, enhanced codes, the error limit; ChunkReader against a reference
under any split (hypothesis)."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from qtoaster.core import reply as R
from qtoaster.core.reply import Reply
from qtoaster.protocols.smtp import events as ev
from qtoaster.protocols.smtp.bodyencode import BodyEncoder
from qtoaster.protocols.smtp.chunking import BdatCommand, ChunkReader, parse_bdat
from qtoaster.protocols.smtp.server import NEED_DATA, ServerConnection
from qtoaster.protocols.smtp.states import State

ENVELOPE = b"MAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.test>\r\n"
QUEUE_FAILED = Reply(451, "qq temporary problem (#4.3.0)")


def pump(conn: ServerConnection, answers: dict[type, Reply]) -> list[object]:
    events: list[object] = []
    while (event := conn.next_event()) is not NEED_DATA:
        events.append(event)
        if type(event) in ev.REPLY_EXPECTED:
            conn.send(answers.get(type(event), R.OK))
    return events


def test_a_refused_first_bdat_answers_after_its_octets_and_later_bdats_get_503() -> None:
    conn = ServerConnection()
    conn.receive_data(ENVELOPE + b"BDAT 10\r\nRSET\r\n")
    events = pump(conn, {ev.Bdat: QUEUE_FAILED})
    assert ev.Bdat(10, False) in events
    # The reply waits for the chunk: 4 of its 10 octets are still to come.
    assert conn.data_to_send() == b"250 ok\r\n250 ok\r\n"
    conn.receive_data(b"xxxxBDAT 2 LAST\r\nyyNOOP\r\n")
    events = pump(conn, {ev.Bdat: QUEUE_FAILED})
    assert not any(isinstance(e, ev.DataChunk | ev.Rset) for e in events)
    assert conn.data_to_send() == (
        b"451 qq temporary problem (#4.3.0)\r\n503 MAIL first (#5.5.1)\r\n250 ok\r\n"
    )


def test_a_huge_chunk_is_streamed_never_buffered() -> None:
    conn = ServerConnection()
    conn.receive_data(ENVELOPE + b"BDAT 99999999999999999999 LAST\r\n")
    pump(conn, {ev.Bdat: R.GO_AHEAD})
    received = 0
    piece = b"x" * 65536
    for _ in range(64):  # 4 MB of a chunk announced as 10^20 octets
        conn.receive_data(piece)
        for event in pump(conn, {}):
            assert isinstance(event, ev.DataChunk)
            received += len(event.data)
        assert conn.buffered == 0 and conn.state is State.CHUNK
    assert received == 64 * len(piece)
    conn.receive_data(b"")
    assert pump(conn, {}) == [ev.ConnectionClosed()]  # a truncated chunk: no DataEnd


def test_a_refused_huge_chunk_is_dropped_as_it_comes() -> None:
    conn = ServerConnection()
    conn.receive_data(b"BDAT 99999999999999999999\r\n" + b"y" * 100_000)
    assert pump(conn, {}) == []
    assert conn.buffered == 0 and conn.data_to_send() == b""
    conn.receive_data(b"")
    assert pump(conn, {}) == [ev.ConnectionClosed()]


def test_enhanced_codes_on_chunk_replies() -> None:
    conn = ServerConnection(enhanced_status_codes=True)
    conn.receive_data(b"EHLO x\r\n" + ENVELOPE + b"BDAT 2\r\nabBDAT 1 LAST\r\nc")
    events = pump(conn, {ev.Helo: Reply(250, "me"), ev.Bdat: R.GO_AHEAD})
    assert conn.data_to_send().split(b"\r\n")[3] == b"250 2.0.0 2 octets received"
    assert events[-1] == ev.DataEnd(0)


def test_out_of_sequence_bdats_count_as_errors() -> None:
    conn = ServerConnection(max_errors=2)
    conn.receive_data(b"BDAT 1\r\nxBDAT 1\r\nxBDAT 1\r\nx")
    pump(conn, {})
    assert conn.data_to_send().splitlines()[-1].startswith(b"421 ")
    assert conn.closed


def test_a_421_to_bdat_closes_at_once() -> None:
    conn = ServerConnection()
    conn.receive_data(ENVELOPE + b"BDAT 5\r\n")
    pump(conn, {ev.Bdat: Reply(421, "going down")})
    assert conn.closed and conn.data_to_send().endswith(b"421 going down\r\n")


def test_parse_bdat() -> None:
    assert parse_bdat("0") == parse_bdat("  0  ") == BdatCommand(0, False)
    assert parse_bdat("12 last") == parse_bdat("12  LAST") == BdatCommand(12, True)
    for bad in ("", "LAST", "-1", "1 2", "1 LAST x", "+1", "1e3", "١", "1" * 21):
        assert parse_bdat(bad) is None, bad


def reference(message: bytes) -> bytes:
    """The queue form of a whole BDAT message, in one go."""
    out = message.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return out if not out or out.endswith(b"\n") else out + b"\n"


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from([b"\r", b"\n", b".", b"a", b"\r\n", b"\xff", b"\0"]), max_size=40),
    st.lists(st.integers(min_value=0, max_value=200), max_size=8),
)
def test_chunk_reader_any_split_matches_reference(parts: list[bytes], cuts: list[int]) -> None:
    message = b"".join(parts)
    bounds = sorted({0, len(message), *(c % (len(message) + 1) for c in cuts)})
    pieces = [message[a:b] for a, b in itertools.pairwise(bounds)] or [b""]
    reader = ChunkReader(len(pieces[0]), len(pieces) == 1)
    out = b""
    for number, piece in enumerate(pieces):
        if number:
            reader.next_chunk(len(piece), number == len(pieces) - 1)
        for i in range(len(piece)):  # byte by byte inside each chunk
            out += reader.feed(piece[i : i + 1])
    out += reader.finish()
    assert out == reference(message)
    assert b"\r" not in out
    # Relayed by DATA: CRLF lines only, and the only CRLF.CRLF is the one that ends it.
    encoder = BodyEncoder()
    wire = b"\r\n" + encoder.encode(out) + encoder.finish()
    assert wire.find(b"\r\n.\r\n") == len(wire) - 5
    assert wire.count(b"\n") == wire.count(b"\r\n") == wire.count(b"\r")
