"""ClientEngine and BodyEncoder under arbitrary input.

- Any server bytes in any chunks: no exception, bounded buffering, one TransactionDone per
  send_message (or a SkipHost), and once the input ends exactly one Closed.
- Without STARTTLS (whose 220 drops the rest of its chunk on purpose), the events and the
  bytes written do not depend on the chunking.
- BodyEncoder's output, split anywhere, framed by the server's DataFramer gives back the
  message.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from qtoaster.protocols.smtp.bodyencode import BodyEncoder, PartialLineError
from qtoaster.protocols.smtp.client import (
    MAX_REPLY_LINE,
    ClientEngine,
    Closed,
    Event,
    Send,
    SendBody,
    SkipHost,
    StartTls,
    TlsMode,
    Transaction,
    TransactionDone,
)
from qtoaster.protocols.smtp.dataframe import DataFramer

EXTENSIONS = [b"PIPELINING", b"STARTTLS", b"SIZE 100", b"SIZE", b"8BITMIME"]
ALTERNATIVES = [
    b"550 no\r\n",
    b"451 later\r\n",
    b"421 bye\r\n",
    b"354 go\r\n",
    b"250-half a reply\r\n",
    b"250 " + b"x" * 3000 + b"\r\n",
    b"bad\r\n",
    b"250 bare lf\n",
    b"250 no line end",
]


@st.composite
def server_bytes(draw: st.DrawFn) -> bytes:
    """A happy server dialog (greeting, EHLO, maybe STARTTLS and EHLO again, then two
    transactions and QUIT, in reply order) with some replies swapped for trouble."""
    offered = draw(st.lists(st.sampled_from(EXTENSIONS), unique=True))
    ehlo = b"".join(b"250-" + line + b"\r\n" for line in [b"mx", *offered]) + b"250 HELP\r\n"
    base = [b"220 mx\r\n", ehlo]
    if b"STARTTLS" in offered:
        base += [b"220 ready\r\n", ehlo]
    transaction = [b"250 ok\r\n"] * 4 + [b"354 go\r\n", b"250 ok\r\n"]
    base += [*transaction, b"250 flushed\r\n", *transaction, b"221 bye\r\n"]
    swaps = draw(
        st.lists(
            st.sampled_from([None] * 80 + ALTERNATIVES),  # about one reply in ten
            min_size=len(base),
            max_size=len(base),
        )
    )
    cut = draw(st.one_of(st.just(len(base)), st.integers(min_value=0, max_value=len(base))))
    replies = [s if s is not None else b for b, s in zip(base, swaps, strict=True)]
    return b"".join(replies[:cut])


TXS = [  # three recipients each, as in the happy dialog
    Transaction("a@x", ("b@y", "c@y", "d@y"), 10, False),
    Transaction("", ("b@y", "c@y", "d@y"), 1000, True),
    Transaction("a@x", ("b@y", "c@y", "d@y"), 0, False),
]


@dataclass
class Driver:
    engine: ClientEngine
    plan: list[int]  # after each TransactionDone: index of the next tx, or -1 to quit
    sent: int = 0
    done: int = 0
    skipped: int = 0
    closed: int = 0
    out: bytearray = field(default_factory=bytearray)
    log: list[str] = field(default_factory=list)

    def send(self, tx: Transaction) -> None:
        self.sent += 1
        self.handle(self.engine.send_message(tx))

    def handle(self, events: list[Event]) -> None:
        for event in events:
            assert self.closed == 0, "nothing after Closed"
            if isinstance(event, Send):
                self.out += event.data
                continue
            self.log.append(repr(event))
            if isinstance(event, StartTls):
                self.handle(self.engine.tls_started())
            elif isinstance(event, SendBody):
                self.out += b"body\r\n.\r\n"
                self.handle(self.engine.body_sent())
            elif isinstance(event, TransactionDone):
                self.done += 1
                if self.plan and self.engine.ready:
                    step = self.plan.pop(0)
                    if step < 0:
                        self.handle(self.engine.quit())
                    else:
                        self.send(TXS[step])
            elif isinstance(event, SkipHost):
                self.skipped += 1
            elif isinstance(event, Closed):
                self.closed += 1


def drive(data: bytes, cuts: list[int], plan: list[int], tls: TlsMode) -> Driver:
    engine = ClientEngine(peer="192.0.2.1", helo="me", tls=tls, tls_file="f.pem")
    driver = Driver(engine, list(plan))
    driver.send(TXS[0])
    bounds = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for start, end in itertools.pairwise(bounds):
        driver.handle(engine.receive(data[start:end]))
        assert engine.buffered < MAX_REPLY_LINE + end - start
    driver.handle(engine.receive(b""))
    return driver


@settings(max_examples=300, deadline=None)
@given(
    server_bytes(),
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=8),
    st.lists(st.integers(min_value=-1, max_value=len(TXS) - 1), max_size=4),
    st.sampled_from(list(TlsMode)),
)
def test_any_input_any_chunking(
    data: bytes, cuts: list[int], plan: list[int], tls: TlsMode
) -> None:
    driver = drive(data, cuts, plan, tls)
    assert driver.closed == 1
    assert driver.done + driver.skipped == driver.sent
    assert driver.skipped <= 1
    if tls is TlsMode.NONE:
        whole = drive(data, [], plan, tls)
        assert (driver.log, driver.out) == (whole.log, whole.out)


messages = st.lists(st.binary(max_size=20).map(lambda b: b.replace(b"\n", b"")), max_size=8).map(
    lambda lines: b"".join(x + b"\n" for x in lines)
)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(messages, st.binary(max_size=60).map(lambda b: b + b"\n" if b else b)),
    st.lists(st.integers(min_value=0, max_value=200), max_size=6),
    st.lists(st.integers(min_value=0, max_value=300), max_size=6),
)
def test_body_round_trip(message: bytes, cuts: list[int], wire_cuts: list[int]) -> None:
    encoder = BodyEncoder()
    bounds = sorted({c % (len(message) + 1) for c in cuts} | {0, len(message)})
    wire = b"".join(encoder.encode(message[a:b]) for a, b in itertools.pairwise(bounds))
    wire += encoder.finish()
    framer, payload = DataFramer(), bytearray()
    wbounds = sorted({c % (len(wire) + 1) for c in wire_cuts} | {0, len(wire)})
    for a, b in itertools.pairwise(wbounds):
        framed = framer.feed(wire[a:b])
        payload += framed.payload
        if framed.end is not None:
            assert a + framed.end == len(wire)  # the end is the very last byte
    assert framer.finished
    assert bytes(payload) == message


@given(st.binary(min_size=1, max_size=40).filter(lambda b: not b.endswith(b"\n")))
def test_partial_final_line_always_detected(message: bytes) -> None:
    encoder = BodyEncoder()
    encoder.encode(message)
    try:
        encoder.finish()
    except PartialLineError:
        return
    raise AssertionError("no PartialLineError")
