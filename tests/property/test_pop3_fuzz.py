"""Pop3Connection under arbitrary input and chunking: no exception, bounded buffers, the
same events and output whatever the chunking, well-formed output; and the multiline writer
and WireSizer under random chunking.

The driver answers from drawn lists in event order (so every chunking gets the same
answers): logins succeed or fail (failure closes, as qmail), AUTH gets challenges or
refusals, STLS +OK or -ERR; between input phases the TLS handshake happens if pending.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from qtoaster.protocols.pop3 import events as ev
from qtoaster.protocols.pop3.multiline import MultilineEncoder, WireSizer
from qtoaster.protocols.pop3.server import NEED_DATA, Pop3Connection, State
from qtoaster.protocols.pop3.states import TRANSITIONS

MAX_LINE = 64
MAX_AUTH_LINE = 100
BODY = b"Subject: x\n\n.dot\nline\r\n.."


@dataclass
class Driver:
    conn: Pop3Connection
    choices: list[int]
    events: list[object] = field(default_factory=list)
    turn: int = 0

    def choose(self, n: int) -> int:
        self.turn += 1
        return self.choices[self.turn % len(self.choices)] % n

    def pump(self) -> None:
        conn = self.conn
        while (event := conn.next_event()) is not NEED_DATA:
            self.events.append(event)
            if not isinstance(event, ev.ConnectionClosed):
                assert (conn.state, type(event)) in TRANSITIONS  # states.py's invariant
                self.answer(event)
        if conn.state is State.AUTH_EXCHANGE:
            assert conn.buffered < MAX_AUTH_LINE
        elif conn.state is not State.TLS_PENDING:
            assert conn.buffered < MAX_LINE

    def answer(self, event: ev.Event) -> None:
        conn = self.conn
        if isinstance(event, ev.LOGIN_EVENTS):
            pick = self.choose(4)
            if pick == 0:
                conn.logged_in()
            elif pick == 1 and isinstance(event, ev.Auth | ev.AuthLine):
                conn.challenge("PDE+")
            elif pick == 2:
                conn.close_after_send()
                conn.err("authorization failed")
            else:
                conn.err("no", code="AUTH")
        elif isinstance(event, ev.Stls):
            conn.ok("go") if self.choose(2) else conn.err("no")
        elif isinstance(event, ev.Capa | ev.List | ev.Uidl) and event != ev.List(1):
            conn.multiline("", ["TOP", "1 2", ".x"])
        elif isinstance(event, ev.Retr | ev.Top):
            conn.send_multiline_start()
            conn.send_multiline_chunk(BODY)
            conn.send_multiline_end()
        else:
            conn.ok()

    def handshake(self) -> None:
        if self.conn.state is State.TLS_PENDING:
            self.conn.discard_input()
            self.conn.start_tls_done()
            self.events.append("handshake")


def run(phases: list[list[bytes]], choices: list[int]) -> tuple[bytes, list[object]]:
    conn = Pop3Connection(max_line=MAX_LINE, max_auth_line=MAX_AUTH_LINE, max_errors=30)
    driver = Driver(conn, choices)
    conn.ok("<1.2@h>")
    for number, chunks in enumerate(phases):
        if number:
            driver.handshake()
        for chunk in filter(None, chunks):
            conn.receive_data(chunk)
            driver.pump()
    conn.receive_data(b"")
    driver.pump()
    assert conn.closed
    return conn.data_to_send(), driver.events


TOKENS = [b"\r\n", b"\n", b"\r", b" ", b"\0", b"\xff", b".", b"0", b"1", b"x" * 70, b"*"]
LINES = [
    b"USER alice",
    b"PASS secret",
    b"PASS",
    b"APOP a b",
    b"APOP",
    b"AUTH CRAM-MD5",
    b"AUTH",
    b"AUTH PLAIN dGVzdA==",
    b"CAPA",
    b"STLS",
    b"STLS x",
    b"STAT",
    b"LIST",
    b"LIST 1",
    b"LIST 0",
    b"UIDL 2",
    b"RETR 1",
    b"RETR x",
    b"TOP 1 2",
    b"TOP 1",
    b"DELE 1",
    b"NOOP",
    b"RSET",
    b"LAST",
    b"QUIT",
    b"y" * 120,
]
pop3_bytes = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from(TOKENS + LINES), max_size=80).map(b"".join),
    st.lists(st.sampled_from(LINES), max_size=30).map(lambda ls: b"\r\n".join(ls) + b"\r\n"),
)
cuts_st = st.lists(st.integers(min_value=0, max_value=100_000), max_size=12)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(pop3_bytes, min_size=1, max_size=3),
    cuts_st,
    st.lists(st.integers(min_value=0, max_value=7), min_size=1, max_size=8),
)
def test_any_bytes_any_chunking_same_result(
    phases: list[bytes], cuts: list[int], choices: list[int]
) -> None:
    whole = run([[p] for p in phases], choices)
    assert run([split(p, cuts) for p in phases], choices) == whole
    assert run([[p[i : i + 1] for i in range(len(p))] for p in phases], choices) == whole
    out = whole[0]
    assert out.endswith(b"\r\n")
    for line in out.split(b"\r\n")[:-1]:
        assert b"\r" not in line and b"\n" not in line


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), cuts_st)
def test_multiline_writer_any_chunking(message: bytes, cuts: list[int]) -> None:
    encoder, sizer = MultilineEncoder(), WireSizer()
    chunks = split(message, cuts)
    out = b"".join(encoder.encode(c) for c in chunks) + encoder.end()
    for chunk in chunks:
        sizer.update(chunk)
    reference = MultilineEncoder()
    assert out == reference.encode(message) + reference.end()
    assert sizer.size == len(out) - encoder.stuffed - 3
    # Unstuffing the body gives the message with CRLF line ends (RFC 1939 3).
    assert out.endswith(b".\r\n") and (len(out) == 3 or out.endswith(b"\n.\r\n"))
    body = out[:-3]
    lines = body.split(b"\r\n")
    assert all(not line.startswith(b".") or line.startswith(b"..") for line in lines[:-1])
    unstuffed = b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)
    expected = message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if expected and not expected.endswith(b"\n"):
        expected += b"\n" if expected.endswith(b"\r") else b"\r\n"
    assert unstuffed == expected
