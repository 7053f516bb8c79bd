"""ServerConnection under arbitrary input and chunking: no exception, bounded buffers,
same output whatever the chunking.

AUTH and STARTTLS are in the mix: the driver answers Auth/AuthLine from a drawn list of
replies (334s among them) and StartTls with 220 or 454.  The client input is a list of
phases; between two phases the TLS handshake happens if a STARTTLS was answered 220 (the
driver calls discard_input() and start_tls_done()), so the clear text a client sends after
STARTTLS is dropped whatever the chunking.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from qtoaster.core import reply as R
from qtoaster.core.reply import Reply
from qtoaster.protocols.smtp import events as ev
from qtoaster.protocols.smtp.server import NEED_DATA, ServerConnection
from qtoaster.protocols.smtp.states import TRANSITIONS, State

MAX_LINE = 64
MAX_AUTH_LINE = 100

ANSWERS: dict[type, Reply] = {
    ev.Helo: Reply(250, "me"),
    ev.MailFrom: R.OK,
    ev.RcptTo: R.OK,
    ev.Data: R.GO_AHEAD,
    ev.Bdat: R.GO_AHEAD,
    ev.DataEnd: R.OK,
    ev.Rset: R.FLUSHED,
    ev.Noop: R.OK,
    ev.Vrfy: R.VRFY,
    ev.Help: R.HELP,
    ev.Quit: Reply(221, "bye"),
}
AUTH_REPLIES = [
    Reply(334, ""),
    Reply(334, "VXNlcm5hbWU6"),
    Reply(235, "ok, go ahead (#2.0.0)"),
    Reply(535, "authentication failed (#5.7.1)"),
    Reply(501, "auth exchange canceled (#5.0.0)"),
    Reply(504, "auth type unimplemented (#5.5.1)"),
]
TLS_REPLIES = [Reply(220, "ready for tls"), Reply(454, "TLS missing certificate (#4.3.0)")]
AUTH_IN_MAIL = Reply(503, "no auth during mail transaction (#5.5.0)")


@dataclass
class Driver:
    """Answers from the drawn lists in event order, so every chunking gets the same answers."""

    conn: ServerConnection
    auth_answers: list[int]
    tls_answers: list[int]
    events: list[object] = field(default_factory=list)
    message: bytearray = field(default_factory=bytearray)
    auths: int = 0
    starttls: int = 0

    def pump(self) -> None:
        conn = self.conn
        while (event := conn.next_event()) is not NEED_DATA:
            if isinstance(event, ev.DataChunk):
                self.message += event.data  # chunk boundaries differ; compare whole messages
                continue
            if isinstance(event, ev.DataEnd):
                self.events.append(bytes(self.message))
                self.message.clear()
            self.events.append(event)
            if type(event) in ev.REPLY_EXPECTED:
                assert (conn.state, type(event)) in TRANSITIONS  # states.py's invariant
                conn.send(self.answer(event))
        # Memory: after draining, at most one partial line is kept (TLS_PENDING holds input
        # until the handshake, which the driver ends).
        if conn.state is State.AUTH:
            assert conn.buffered < MAX_AUTH_LINE
        elif conn.state is State.CHUNK:
            assert conn.buffered == 0  # a BDAT chunk is never held whole, whatever its size
        elif conn.state is not State.TLS_PENDING:
            assert conn.buffered < MAX_LINE

    def answer(self, event: ev.Event) -> Reply:
        if isinstance(event, ev.StartTls):
            self.starttls += 1
            return TLS_REPLIES[self.tls_answers[self.starttls % len(self.tls_answers)]]
        if isinstance(event, ev.Auth | ev.AuthLine):
            if self.conn.state in (State.MAIL, State.RCPT):
                return AUTH_IN_MAIL
            self.auths += 1
            return AUTH_REPLIES[self.auth_answers[self.auths % len(self.auth_answers)]]
        return ANSWERS[type(event)]

    def handshake(self) -> None:
        if self.conn.state is State.TLS_PENDING:
            self.conn.discard_input()
            self.conn.start_tls_done()
            self.events.append("handshake")


def run(
    phases: list[list[bytes]],
    auth_answers: list[int] | None = None,
    tls_answers: list[int] | None = None,
) -> tuple[bytes, list[object]]:
    conn = ServerConnection(
        max_line=MAX_LINE,
        max_auth_line=MAX_AUTH_LINE,
        max_errors=50,
        max_commands=500,
        max_recipients=3,
    )
    driver = Driver(conn, auth_answers or [0, 1, 2, 3, 4, 5], tls_answers or [0, 1])
    for number, chunks in enumerate(phases):
        if number:
            driver.handshake()
        for chunk in filter(None, chunks):  # b"" would be EOF
            conn.receive_data(chunk)
            driver.pump()
    conn.receive_data(b"")
    driver.pump()
    assert conn.closed
    return conn.data_to_send(), driver.events


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
    b"AUTH PLAIN dGVzdA==",
    b"AUTH LOGIN",
    b"auth",
    b"*",
    b"dGVzdA==",
    b"y" * 120,
    b"STARTTLS",
    b"STARTTLS x",
    b"BDAT 3",
    b"BDAT 0 LAST",
    b"BDAT 7 LAST",
    b"BDAT 1",
    b"BDAT 99999999999999999999",
    b"BDAT 123456789012345678901",
    b"BDAT",
    b" BODY=BINARYMIME",
]
LINES = [t for t in TOKENS if b"\n" not in t and b"\r" not in t]
smtp_bytes = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from(TOKENS), max_size=80).map(b"".join),
    # Whole lines, so that AUTH exchanges and STARTTLS handshakes happen often.
    st.lists(st.sampled_from(LINES), max_size=30).map(lambda ls: b"\r\n".join(ls) + b"\r\n"),
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=400, deadline=None)
@given(smtp_bytes, st.lists(st.integers(min_value=0, max_value=100_000), max_size=12))
def test_any_bytes_any_chunking_same_result(data: bytes, cuts: list[int]) -> None:
    whole = run([[data]])
    assert run([split(data, cuts)]) == whole
    assert run([[data[i : i + 1] for i in range(len(data))]]) == whole


@settings(max_examples=300, deadline=None)
@given(
    st.lists(smtp_bytes, min_size=1, max_size=3),
    st.lists(st.integers(min_value=0, max_value=100_000), max_size=12),
    st.lists(st.integers(min_value=0, max_value=len(AUTH_REPLIES) - 1), min_size=1, max_size=8),
    st.lists(st.integers(min_value=0, max_value=len(TLS_REPLIES) - 1), min_size=1, max_size=3),
)
def test_auth_and_starttls_any_chunking_same_result(
    phases: list[bytes], cuts: list[int], auth_answers: list[int], tls_answers: list[int]
) -> None:
    whole = run([[p] for p in phases], auth_answers, tls_answers)
    assert run([split(p, cuts) for p in phases], auth_answers, tls_answers) == whole
    bytewise = [[p[i : i + 1] for i in range(len(p))] for p in phases]
    assert run(bytewise, auth_answers, tls_answers) == whole


@settings(max_examples=200, deadline=None)
@given(smtp_bytes)
def test_output_is_well_formed_replies(data: bytes) -> None:
    out, _ = run([[data]])
    for line in out.split(b"\r\n")[:-1]:
        assert line[:3].isdigit() and line[3:4] in (b" ", b"-")
        assert b"\r" not in line and b"\n" not in line
