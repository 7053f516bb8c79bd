"""ServerConnection under arbitrary input and chunking: no exception, bounded buffers,
same output whatever the chunking."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from qtoaster.core import reply as R
from qtoaster.core.reply import Reply
from qtoaster.protocols.smtp import events as ev
from qtoaster.protocols.smtp.server import NEED_DATA, ServerConnection
from qtoaster.protocols.smtp.states import TRANSITIONS

MAX_LINE = 64

ANSWERS: dict[type, Reply] = {
    ev.Helo: Reply(250, "me"),
    ev.MailFrom: R.OK,
    ev.RcptTo: R.OK,
    ev.Data: R.GO_AHEAD,
    ev.DataEnd: R.OK,
    ev.Rset: R.FLUSHED,
    ev.Noop: R.OK,
    ev.Vrfy: R.VRFY,
    ev.Help: R.HELP,
    ev.Quit: Reply(221, "bye"),
}


def run(chunks: list[bytes]) -> tuple[bytes, list[object]]:
    conn = ServerConnection(max_line=MAX_LINE, max_errors=50, max_commands=500, max_recipients=3)
    events: list[object] = []
    message = bytearray()
    for chunk in [*chunks, b""]:
        conn.receive_data(chunk)
        while (event := conn.next_event()) is not NEED_DATA:
            if isinstance(event, ev.DataChunk):
                message += event.data  # chunk boundaries differ; compare whole messages
                continue
            if isinstance(event, ev.DataEnd):
                events.append(bytes(message))
                message.clear()
            events.append(event)
            if type(event) in ANSWERS:
                assert (conn.state, type(event)) in TRANSITIONS  # states.py's invariant
                conn.send(ANSWERS[type(event)])
        # Memory: after draining, at most one partial command line is kept.
        assert conn.buffered < MAX_LINE
    assert conn.closed
    return conn.data_to_send(), events


TOKENS = [
    b"\r\n",
    b"\n",
    b"\r",
    b".",
    b" ",
    b"\0",
    b"\xff",
    b"HELO x",
    b"EHLO",
    b"MAIL FROM:<a@b>",
    b"MAIL FROM:<",
    b"RCPT TO:<c@d>",
    b"DATA",
    b"RSET",
    b"NOOP",
    b"VRFY",
    b"HELP",
    b"QUIT",
    b"Received:",
    b"x" * 70,
    b"SIZE=9",
]
smtp_bytes = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from(TOKENS), max_size=80).map(b"".join),
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=400, deadline=None)
@given(smtp_bytes, st.lists(st.integers(min_value=0, max_value=100_000), max_size=12))
def test_any_bytes_any_chunking_same_result(data: bytes, cuts: list[int]) -> None:
    whole = run([data])
    assert run(split(data, cuts)) == whole
    assert run([data[i : i + 1] for i in range(len(data))]) == whole


@settings(max_examples=200, deadline=None)
@given(smtp_bytes)
def test_output_is_well_formed_replies(data: bytes) -> None:
    out, _ = run([data])
    for line in out.split(b"\r\n")[:-1]:
        assert line[:3].isdigit() and line[3:4] in (b" ", b"-")
        assert b"\r" not in line and b"\n" not in line
