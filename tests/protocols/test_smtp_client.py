"""Golden S:/C: transcripts through ClientEngine, server bytes fed in one chunk and byte by byte.

Transcript lines:
  ``S: text``  the server sends text + CRLF      ``S~ text``  raw, backslash escapes, no CRLF
  ``C: text``  the engine (or the driver's body) writes text + CRLF     ``C~ text``  raw
  ``E: what``  an event the driver saw: Ready, StartTls, SendBody, SkipHost, Closed,
               ``Done <letter> <recipient letters>``
  ``X: n``     the driver calls send_message(transaction n)
  ``T:``       tls_started()       ``T! reason``  tls_failed(reason)
  ``Q:``       quit()              ``L:``  connection_lost()       ``F:``  receive(b"") (EOF)
The S: bytes between two action lines form one phase; C: and E: lines are checked as a whole
(the output and the event list), so their place among S: lines is documentation.  On SendBody
the driver writes the transaction's body through a BodyEncoder and calls body_sent() (or
body_failed() on PartialLineError); on SendChunk it calls chunk() with the next chunk of
``bdat_size`` octets (a ChunkFramer's).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from qtoaster.core.outcome import Outcome
from qtoaster.protocols.smtp.bdatsend import ChunkFramer
from qtoaster.protocols.smtp.client import (
    BodyEncoder,
    ClientEngine,
    ClientStateError,
    Closed,
    Event,
    PartialLineError,
    Ready,
    RecipientReport,
    Send,
    SendBody,
    SendChunk,
    SkipHost,
    TlsMode,
    Transaction,
    TransactionDone,
    TransactionResult,
)

IP = "192.0.2.7"
HELO = "me.example"
TLS_FILE = "/var/qmail/control/tlshosts/mx.example.pem"

BODY = b"Subject: hi\n\n.dot line\nx\n"
BODY_WIRE = ["Subject: hi", "", "..dot line", "x", "."]
ONE = (Transaction("a@me.example", ("b@x.example",), len(BODY), False), BODY)
THREE = (
    Transaction("a@me.example", ("b@x.example", "c@x.example", "d@x.example"), 26, False),
    BODY,
)


@dataclass
class Driver:
    engine: ClientEngine
    txs: list[tuple[Transaction, bytes]]
    out: bytearray = field(default_factory=bytearray)
    seen: list[str] = field(default_factory=list)
    results: list[TransactionResult] = field(default_factory=list)
    body: bytes = b""
    bdat_size: int = 16  # BDAT chunk size (test_smtp_client_bdat.py)
    chunks: list[bytes] | None = None

    def handle(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, Send):
                self.out += event.data
                continue
            self.seen.append(summary(event))
            if isinstance(event, TransactionDone):
                self.results.append(event.result)
            elif isinstance(event, SendBody):
                self.handle(self.send_body())
            elif isinstance(event, SendChunk):
                self.handle(self.send_chunk())

    def send_body(self) -> list[Event]:
        encoder = BodyEncoder()
        self.out += encoder.encode(self.body)
        try:
            self.out += encoder.finish()
        except PartialLineError as error:
            return self.engine.body_failed(str(error), permanent=True)
        return self.engine.body_sent()

    def send_chunk(self) -> list[Event]:
        if self.chunks is None:
            framer = ChunkFramer(self.bdat_size)
            self.chunks = [*framer.feed(self.body), framer.finish()]
        data = self.chunks.pop(0)
        return self.engine.chunk(data, last=not self.chunks)

    def act(self, tag: str, arg: str) -> None:
        if tag == "X:":
            tx, self.body = self.txs[int(arg)]
            self.chunks = None
            self.handle(self.engine.send_message(tx))
        elif tag == "T:":
            self.handle(self.engine.tls_started())
        elif tag == "T!":
            self.handle(self.engine.tls_failed(arg))
        elif tag == "Q:":
            self.handle(self.engine.quit())
        elif tag == "L:":
            self.handle(self.engine.connection_lost())
        elif tag == "F:":
            self.handle(self.engine.receive(b""))
        else:
            raise AssertionError(tag)


def summary(event: Event) -> str:
    if isinstance(event, TransactionDone):
        letters = "".join(r.letter for r in event.result.recipients)
        return f"Done {event.result.letter} {letters}"
    return type(event).__name__


def unescape(text: str) -> bytes:
    return text.encode("utf-8").decode("unicode_escape").encode("latin-1")


def run(
    script: str,
    txs: list[tuple[Transaction, bytes]],
    feed: Callable[[bytes], Iterator[bytes]],
    bdat_size: int = 16,
    **options: object,
) -> Driver:
    engine = ClientEngine(peer=IP, helo=HELO, **options)  # type: ignore[arg-type]
    driver = Driver(engine, txs, bdat_size=bdat_size)
    expected_out, expected_events = bytearray(), []
    phase = bytearray()
    for line in script.strip().split("\n"):
        tag, arg = line.strip()[:2], line.strip()[3:]
        if not tag:
            continue
        if tag == "S:":
            phase += arg.encode() + b"\r\n"
        elif tag == "S~":
            phase += unescape(arg)
        elif tag == "C:":
            expected_out += arg.encode() + b"\r\n"
        elif tag == "C~":
            expected_out += unescape(arg)
        elif tag == "E:":
            expected_events.append(arg)
        else:
            for chunk in feed(bytes(phase)):
                driver.handle(engine.receive(chunk))
            phase.clear()
            driver.act(tag, arg)
    for chunk in feed(bytes(phase)):
        driver.handle(engine.receive(chunk))
    assert driver.out.decode("latin-1") == expected_out.decode("latin-1")
    assert driver.seen == expected_events
    return driver


def whole(data: bytes) -> Iterator[bytes]:
    if data:
        yield data


def bytewise(data: bytes) -> Iterator[bytes]:
    for i in range(len(data)):
        yield data[i : i + 1]


@pytest.fixture(params=[whole, bytewise], ids=["one-chunk", "byte-by-byte"])
def feed(request: pytest.FixtureRequest) -> Callable[[bytes], Iterator[bytes]]:
    return request.param  # type: ignore[no-any-return]


def said(*lines: str) -> str:
    return "\nRemote host said: " + "\n".join(lines) + "\n"


# -- the plain dialog ---------------------------------------------------------------------------


PLAIN = """
    X: 0
    S: 220 mx.example ESMTP
    C: EHLO me.example
    S: 250-mx.example
    S: 250 HELP
    E: Ready
    C: MAIL FROM:<a@me.example>
    S: 250 ok
    C: RCPT TO:<b@x.example>
    S: 250 ok
    C: DATA
    S: 354 go ahead
    E: SendBody
    C: Subject: hi
    C:
    C: ..dot line
    C: x
    C: .
    S: 250 ok 1700000000 qp 42
    E: Done K r
    Q:
    C: QUIT
    S: 221 bye
    E: Closed
"""


def test_plain_dialog(feed: Callable[[bytes], Iterator[bytes]]) -> None:
    driver = run(PLAIN, [ONE], feed)
    (result,) = driver.results
    assert result.text == f"{IP} accepted message." + said("250 ok 1700000000 qp 42")
    assert result.recipients == (RecipientReport("r", ""),)
    assert result.outcomes() == [(Outcome.SUCCESS, result.text)]
    assert not driver.engine.ready


def test_send_message_after_ready(feed: Callable[[bytes], Iterator[bytes]]) -> None:
    script = """
        S: 220 mx.example ESMTP
        C: EHLO me.example
        S: 250 mx.example
        E: Ready
        X: 0
        C: MAIL FROM:<a@me.example>
        S: 250 ok
        C: RCPT TO:<b@x.example>
        S: 250 ok
        C: DATA
        S: 354 go ahead
        E: SendBody
        C: Subject: hi
        C:
        C: ..dot line
        C: x
        C: .
        S: 250 ok
        E: Done K r
    """
    driver = run(script, [ONE], feed)
    assert driver.engine.ready and driver.engine.extensions == {}


def test_helo_fallback_and_multiline_replies(feed: Callable[[bytes], Iterator[bytes]]) -> None:
    script = """
        X: 0
        S: 220-mx.example ESMTP
        S: 220 no UCE
        C: EHLO me.example
        S: 502 unimplemented (#5.5.1)
        C: HELO me.example
        S: 250 mx.example
        E: Ready
        C: MAIL FROM:<a@me.example>
        S: 250 ok
        C: RCPT TO:<b@x.example>
        S: 250 ok
        C: DATA
        S: 354 go ahead
        E: SendBody
        C: Subject: hi
        C:
        C: ..dot line
        C: x
        C: .
        S: 250-ok
        S: 250 queued as 12
        E: Done K r
    """
    driver = run(script, [ONE], feed)
    assert driver.results[0].text == f"{IP} accepted message." + said("250-ok", "250 queued as 12")


@pytest.mark.parametrize(("code", "letter"), [("550", "D"), ("421", "Z")])
def test_name_rejected(feed: Callable[[bytes], Iterator[bytes]], code: str, letter: str) -> None:
    script = f"""
        X: 0
        S: 220 mx.example ESMTP
        C: EHLO me.example
        S: 550 go away
        C: HELO me.example
        S: {code} go away
        C: QUIT
        E: Done {letter} r
        E: Closed
    """
    driver = run(script, [ONE], feed)
    text = f"Connected to {IP} but my name was rejected." + said(f"{code} go away")
    assert driver.results[0].text == text
    assert driver.results[0].outcomes()[0][1] == text


# -- greeting (spec 17.4) ---------------------------------------------------------------------


@pytest.mark.parametrize("code", ["421", "554"])
def test_greeting_4xx_5xx_skips_host(feed: Callable[[bytes], Iterator[bytes]], code: str) -> None:
    script = f"""
        X: 0
        S: {code} not now
        C: QUIT
        E: SkipHost
        E: Closed
    """
    driver = run(script, [ONE], feed)
    assert driver.results == []
    # The engine is closed: a later send_message reports at once, no bytes written.
    done = driver.engine.send_message(ONE[0])
    assert [summary(e) for e in done] == ["Done Z r"]


def test_skip_host_reason() -> None:
    engine = ClientEngine(peer=IP, helo=HELO)
    events = engine.receive(b"554-no\r\n554 never\r\n")
    assert events[1] == SkipHost(
        f"Connected to {IP} but greeting failed." + said("554-no", "554 never")
    )


def test_other_greeting_fails(feed: Callable[[bytes], Iterator[bytes]]) -> None:
    script = """
        X: 0
        S: 250 hello?
        C: QUIT
        E: Done Z r
        E: Closed
    """
    driver = run(script, [ONE], feed)
    assert driver.results[0].text == f"Connected to {IP} but greeting failed." + said("250 hello?")


def test_failure_before_send_message_is_kept() -> None:
    engine = ClientEngine(peer=IP, helo=HELO)
    assert engine.receive(b"300 what\r\n") == [Send(b"QUIT\r\n"), Closed()]
    (done,) = engine.send_message(ONE[0])
    assert isinstance(done, TransactionDone)
    assert done.result.letter == "Z"
    assert done.result.text.startswith(f"Connected to {IP} but greeting failed.")


# -- transactions -----------------------------------------------------------------------------

EHLO_PIPELINING = """
    X: 0
    S: 220 mx.example ESMTP
    C: EHLO me.example
    S: 250-mx.example
    S: 250-PIPELINING
    S: 250 8BITMIME
    E: Ready
"""


def test_pipelining_mixed_recipients(feed: Callable[[bytes], Iterator[bytes]]) -> None:
    script = (
        EHLO_PIPELINING
        + """
        C: MAIL FROM:<a@me.example>
        C: RCPT TO:<b@x.example>
        C: RCPT TO:<c@x.example>
        C: RCPT TO:<d@x.example>
        C: DATA
        S: 250 ok
        S: 250 ok
        S: 550 sorry, no mailbox here by that name. (#5.1.1)
        S: 451 try later
        S: 354 go ahead
        E: SendBody
        C: Subject: hi
        C:
        C: ..dot line
        C: x
        C: .
        S: 250 ok
        E: Done K rhs
    """
    )
    driver = run(script, [THREE], feed)
    result = driver.results[0]
    bad = f"{IP} does not like recipient."
    assert result.recipients[1].text == bad + said(
        "550 sorry, no mailbox here by that name. (#5.1.1)"
    )
    assert result.recipients[2].text == bad + said("451 try later")
    assert result.outcomes() == [
        (Outcome.SUCCESS, f"{IP} accepted message." + said("250 ok")),
        (Outcome.PERMANENT, result.recipients[1].text),
        (Outcome.TEMPORARY, result.recipients[2].text),
    ]


def test_pipelining_all_refused_then_reuse(feed: Callable[[bytes], Iterator[bytes]]) -> None:
    script = (
        EHLO_PIPELINING
        + """
        C: MAIL FROM:<a@me.example>
        C: RCPT TO:<b@x.example>
        C: RCPT TO:<c@x.example>
        C: RCPT TO:<d@x.example>
        C: DATA
        S: 250 ok
        S: 550 no
        S: 450 later
        S: 550 no
        S: 554 no valid recipients
        E: Done D hsh
        X: 1
        C: RSET
        C: MAIL FROM:<a@me.example>
        C: RCPT TO:<b@x.example>
        C: DATA
        S: 250 flushed
        S: 250 ok
        S: 250 ok
        S: 354 go ahead
        E: SendBody
        C: Subject: hi
        C:
        C: ..dot line
        C: x
        C: .
        S: 250 ok
        E: Done K r
        X: 1
        C: MAIL FROM:<a@me.example>
        C: RCPT TO:<b@x.example>
        C: DATA
        S: 250 ok
        S: 250 ok
        S: 354 go ahead
        E: SendBody
        C: Subject: hi
        C:
        C: ..dot line
        C: x
        C: .
        S: 452 disk full
        E: Done Z r
    """
    )
    driver = run(script, [THREE, ONE], feed)
    first, _, third = driver.results
    assert first.text == f"Giving up on {IP}."
    assert [o for o, _ in first.outcomes()] == [
        Outcome.PERMANENT,
        Outcome.TEMPORARY,
        Outcome.PERMANENT,
    ]
    assert third.text == f"{IP} failed after I sent the message." + said("452 disk full")


def test_all_recipients_temporary_is_z(feed: Callable[[bytes], Iterator[bytes]]) -> None:
    script = """
        X: 0
        S: 220 mx.example ESMTP
        C: EHLO me.example
        S: 250 mx.example
        E: Ready
        C: MAIL FROM:<a@me.example>
        S: 250 ok
        C: RCPT TO:<b@x.example>
        S: 451 greylisted
        C: RCPT TO:<c@x.example>
        S: 421 later
        C: RCPT TO:<d@x.example>
        S: 452 later
        E: Done Z sss
    """
    driver = run(script, [THREE], feed)
    assert driver.results[0].text == f"Giving up on {IP}."


def test_unwanted_354_gets_an_empty_message(feed: Callable[[bytes], Iterator[bytes]]) -> None:
    script = (
        EHLO_PIPELINING
        + """
        C: MAIL FROM:<a@me.example>
        C: RCPT TO:<b@x.example>
        C: DATA
        S: 250 ok
        S: 550 no
        S: 354 go ahead anyway
        C: .
        S: 554 no recipients
        E: Done D h
    """
    )
    run(script, [ONE], feed)


@pytest.mark.parametrize(("code", "letter"), [("553", "D"), ("451", "Z")])
def test_sender_rejected_pipelined(
    feed: Callable[[bytes], Iterator[bytes]], code: str, letter: str
) -> None:
    script = (
        EHLO_PIPELINING
        + f"""
        C: MAIL FROM:<a@me.example>
        C: RCPT TO:<b@x.example>
        C: RCPT TO:<c@x.example>
        C: RCPT TO:<d@x.example>
        C: DATA
        S: {code} sorry, your envelope sender is in my badmailfrom list (#5.7.1)
        S: 503 MAIL first (#5.5.1)
        S: 503 MAIL first (#5.5.1)
        S: 503 MAIL first (#5.5.1)
        S: 503 MAIL first (#5.5.1)
        E: Done {letter} rrr
    """
    )
    driver = run(script, [THREE], feed)
    result = driver.results[0]
    text = f"Connected to {IP} but sender was rejected." + said(
        f"{code} sorry, your envelope sender is in my badmailfrom list (#5.7.1)"
    )
    assert result.text == text
    outcome = Outcome.PERMANENT if letter == "D" else Outcome.TEMPORARY
    assert result.outcomes() == [(outcome, text)] * 3


def test_sender_rejected_one_by_one(feed: Callable[[bytes], Iterator[bytes]]) -> None:
    script = """
        X: 0
        S: 220 mx.example ESMTP
        C: EHLO me.example
        S: 250 mx.example
        E: Ready
        C: MAIL FROM:<>
        S: 553 no bounces
        E: Done D r
        X: 0
        C: RSET
        S: 250 flushed
        C: MAIL FROM:<>
        S: 250 ok
        C: RCPT TO:<b@x.example>
        S: 250 ok
        C: DATA
        S: 554 no
        E: Done D r
    """
    bounce = (Transaction("", ("b@x.example",), 3, False), b"x\n")
    driver = run(script, [bounce], feed)
    assert driver.results[1].text == f"{IP} failed on DATA command." + said("554 no")


# -- SIZE and 8BITMIME ------------------------------------------------------------------------

EHLO_SIZE = """
    X: 0
    S: 220 mx.example ESMTP
    C: EHLO me.example
    S: 250-mx.example
    S: 250-SIZE 1000
    S: 250 8BITMIME
    E: Ready
"""


def test_size_and_body_parameters(feed: Callable[[bytes], Iterator[bytes]]) -> None:
    script = (
        EHLO_SIZE
        + """
        C: MAIL FROM:<a@me.example> SIZE=1000 BODY=8BITMIME
        S: 250 ok
        C: RCPT TO:<b@x.example>
        S: 250 ok
        C: DATA
        S: 354 go ahead
        E: SendBody
        C: caf\xe9
        C: .
        S: 250 ok
        E: Done K r
        X: 1
        C: MAIL FROM:<a@me.example> SIZE=4
        S: 250 ok
        C: RCPT TO:<b@x.example>
        S: 250 ok
        C: DATA
        S: 354 go ahead
        E: SendBody
        C: abc
        C: .
        S: 250 ok
        E: Done K r
    """
    )
    eight = (Transaction("a@me.example", ("b@x.example",), 1000, True), "caf\xe9\n".encode())
    seven = (Transaction("a@me.example", ("b@x.example",), 4, False), b"abc\n")
    run(script, [eight, seven], feed)


def test_size_over_the_limit(feed: Callable[[bytes], Iterator[bytes]]) -> None:
    script = (
        EHLO_SIZE
        + """
        E: Done D r
    """
    )
    big = (Transaction("a@me.example", ("b@x.example",), 1001, False), b"")
    driver = run(script, [big], feed)
    assert driver.results[0].text == (
        f"{IP} rejected the message size: 1001 bytes is more than the limit of 1000. (#5.3.4)"
    )


def test_eightbit_without_8bitmime(feed: Callable[[bytes], Iterator[bytes]]) -> None:
    script = """
        X: 0
        S: 220 mx.example ESMTP
        C: EHLO me.example
        S: 250-mx.example
        S: 250 SIZE
        E: Ready
        E: Done D r
        X: 1
        C: MAIL FROM:<a@me.example> SIZE=4
        S: 250 ok
        C: RCPT TO:<b@x.example>
        S: 250 ok
        C: DATA
        S: 354 go ahead
        E: SendBody
        C: abc
        C: .
        S: 250 ok
        E: Done K r
    """
    eight = (Transaction("a@me.example", ("b@x.example",), 10**9, True), b"\xff\n")
    seven = (Transaction("a@me.example", ("b@x.example",), 4, False), b"abc\n")
    driver = run(script, [eight, seven], feed)
    assert driver.results[0].text == (
        "Remote host does not support 8BITMIME and the message has 8-bit content. (#5.6.3)"
    )


def test_line_break_in_an_address_is_never_sent() -> None:
    engine = ClientEngine(peer=IP, helo=HELO)
    engine.receive(b"220 hi\r\n")
    engine.receive(b"250 hi\r\n")
    tx = Transaction("a@me.example", ("b@x.example>\r\nRCPT TO:<c@y.example",), 3, False)
    (done,) = engine.send_message(tx)
    assert isinstance(done, TransactionDone) and done.result.letter == "D"


# -- STARTTLS (spec 17.5, RFC 3207) -------------------------------------------------------------

STARTTLS_OFFER = """
    X: 0
    S: 220 mx.example ESMTP
    C: EHLO me.example
    S: 250-mx.example
    S: 250-STARTTLS
    S: 250 PIPELINING
"""
AFTER_TLS = """
    C: EHLO me.example
    S: 250-mx.example
    S: 250 PIPELINING
    E: Ready
    C: MAIL FROM:<a@me.example>
    C: RCPT TO:<b@x.example>
    C: DATA
    S: 250 ok
    S: 250 ok
    S: 354 go ahead
    E: SendBody
    C: Subject: hi
    C:
    C: ..dot line
    C: x
    C: .
    S: 250 ok
    E: Done K r
"""


@pytest.mark.parametrize("mode", [TlsMode.OPPORTUNISTIC, TlsMode.REQUIRED])
def test_starttls_and_injection_dropped(
    feed: Callable[[bytes], Iterator[bytes]], mode: TlsMode
) -> None:
    script = (
        STARTTLS_OFFER
        + """
        C: STARTTLS
        S: 220 ready for tls
        S: 250 injected after the 220
        S~ 550 partial injected line
        E: StartTls
        T:
    """
        + AFTER_TLS
    )
    driver = run(script, [ONE], feed, tls=mode, tls_file=TLS_FILE)
    assert driver.engine.tls_active
    assert driver.engine.extensions == {"PIPELINING": None}


def test_starttls_rejected_opportunistic_goes_on(feed: Callable[[bytes], Iterator[bytes]]) -> None:
    script = (
        STARTTLS_OFFER
        + """
        C: STARTTLS
        S: 454 TLS not available due to temporary reason
        E: Ready
        C: MAIL FROM:<a@me.example>
        C: RCPT TO:<b@x.example>
        C: DATA
        S: 250 ok
        S: 250 ok
        S: 354 go ahead
        E: SendBody
        C: Subject: hi
        C:
        C: ..dot line
        C: x
        C: .
        S: 250 ok
        E: Done K r
    """
    )
    driver = run(script, [ONE], feed)
    assert not driver.engine.tls_active


def test_starttls_rejected_required(feed: Callable[[bytes], Iterator[bytes]]) -> None:
    script = (
        STARTTLS_OFFER
        + """
        C: STARTTLS
        S: 454 TLS not available
        C: QUIT
        E: Done Z r
        E: Closed
    """
    )
    driver = run(script, [ONE], feed, tls=TlsMode.REQUIRED, tls_file=TLS_FILE)
    text = f"STARTTLS rejected while {TLS_FILE} exists" + said("454 TLS not available")
    assert driver.results[0].text == text


def test_no_tls_while_required(feed: Callable[[bytes], Iterator[bytes]]) -> None:
    script = """
        X: 0
        S: 220 mx.example ESMTP
        C: EHLO me.example
        S: 500 what
        C: HELO me.example
        S: 250 mx.example
        C: QUIT
        E: Done Z r
        E: Closed
    """
    driver = run(script, [ONE], feed, tls=TlsMode.REQUIRED, tls_file=TLS_FILE)
    assert driver.results[0].text == f"No TLS achieved while {TLS_FILE} exists"


def test_tls_none_never_starts_tls(feed: Callable[[bytes], Iterator[bytes]]) -> None:
    script = (
        STARTTLS_OFFER
        + """
        E: Ready
        C: MAIL FROM:<a@me.example>
        C: RCPT TO:<b@x.example>
        C: DATA
        S: 250 ok
        S: 250 ok
        S: 354 go ahead
        E: SendBody
        C: Subject: hi
        C:
        C: ..dot line
        C: x
        C: .
        S: 250 ok
        E: Done K r
    """
    )
    run(script, [ONE], feed, tls=TlsMode.NONE)


def test_implicit_tls_never_sends_starttls(feed: Callable[[bytes], Iterator[bytes]]) -> None:
    script = (
        STARTTLS_OFFER
        + """
        E: Ready
        E: Done D r
    """
    )
    eight = (Transaction("a@me.example", ("b@x.example",), 1, True), b"\xff\n")
    run(script, [eight], feed, tls=TlsMode.REQUIRED, tls_file=TLS_FILE, tls_active=True)


def test_tls_handshake_failed(feed: Callable[[bytes], Iterator[bytes]]) -> None:
    script = (
        STARTTLS_OFFER
        + """
        C: STARTTLS
        S: 220 ready for tls
        E: StartTls
        T! certificate verify failed
        E: Done Z r
        E: Closed
    """
    )
    driver = run(script, [ONE], feed)
    assert driver.results[0].text == "TLS connect failed: certificate verify failed"


def test_ehlo_after_tls_rejected(feed: Callable[[bytes], Iterator[bytes]]) -> None:
    script = (
        STARTTLS_OFFER
        + """
        C: STARTTLS
        S: 220 ready for tls
        E: StartTls
        T:
        C: EHLO me.example
        S: 554 no
        C: QUIT
        E: Done Z r
        E: Closed
    """
    )
    driver = run(script, [ONE], feed)
    assert driver.results[0].text == f"TLS connected to {IP} but my name was rejected." + said(
        "554 no"
    )


# -- the connection ends ----------------------------------------------------------------------

PLAIN_SERVER = [
    b"220 mx.example ESMTP\r\n",
    b"250-mx.example\r\n250 HELP\r\n",
    b"250 ok\r\n",  # MAIL
    b"250 ok\r\n",  # RCPT
    b"354 go ahead\r\n",  # DATA: the driver sends the body and the dot at once
    b"250 ok\r\n",  # the final reply
]


@pytest.mark.parametrize("how", ["eof", "lost"])
@pytest.mark.parametrize("stage", range(len(PLAIN_SERVER) + 1))
@pytest.mark.parametrize("partial", [b"", b"25"])
def test_connection_lost_at_each_stage(stage: int, how: str, partial: bytes) -> None:
    engine = ClientEngine(peer=IP, helo=HELO)
    driver = Driver(engine, [ONE])
    driver.act("X:", "0")
    for chunk in bytewise(b"".join(PLAIN_SERVER[:stage]) + partial):
        driver.handle(engine.receive(chunk))
    driver.act("F:" if how == "eof" else "L:", "")
    if stage == len(PLAIN_SERVER):
        assert driver.seen == ["Ready", "SendBody", "Done K r", "Closed"]
        return
    assert driver.seen[-2:] == ["Done Z r", "Closed"]
    duplicate = "Possible duplicate! " if stage == len(PLAIN_SERVER) - 1 else ""
    text = f"Connected to {IP} but connection died. {duplicate}(#4.4.2)"
    assert driver.results == [TransactionResult((RecipientReport("r", ""),), "Z", text)]
    assert engine.receive(b"250 late\r\n") == [] and engine.connection_lost() == []


def test_lost_while_idle_and_reply_while_idle() -> None:
    engine = ClientEngine(peer=IP, helo=HELO)
    assert engine.receive(b"220 hi\r\n250 hi\r\n") == [Send(b"EHLO me.example\r\n"), Ready({})]
    assert engine.receive(b"421 idle too long\r\n") == [Closed()]
    (done,) = engine.send_message(ONE[0])
    assert isinstance(done, TransactionDone) and done.result.letter == "Z"


@pytest.mark.parametrize(
    "bad",
    [
        b"hello\r\n",
        b"25\r\n",
        b"250x\r\n",
        b"650 six\r\n",
        b"250 " + b"x" * 2100 + b"\r\n",
        b"250-x\r\n" * 101,
    ],
)
def test_malformed_reply(bad: bytes) -> None:
    engine = ClientEngine(peer=IP, helo=HELO)
    engine.send_message(ONE[0])
    engine.receive(b"220 hi\r\n")
    events = engine.receive(bad)
    text = f"Connected to {IP} but it sent a malformed reply. (#4.4.2)"
    assert events == [
        TransactionDone(TransactionResult((RecipientReport("r", ""),), "Z", text)),
        Closed(),
    ]


def test_malformed_final_reply_warns_of_duplicate() -> None:
    engine = ClientEngine(peer=IP, helo=HELO)
    engine.send_message(ONE[0])
    engine.receive(b"220 hi\r\n250 hi\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    engine.body_sent()
    (done, closed) = engine.receive(b"\x00\r\n")
    assert isinstance(done, TransactionDone) and closed == Closed()
    assert "Possible duplicate! (#4.4.2)" in done.result.text


def test_final_reply_before_body_sent_is_held() -> None:
    engine = ClientEngine(peer=IP, helo=HELO)
    engine.send_message(ONE[0])
    events = engine.receive(b"220 hi\r\n250 hi\r\n250 ok\r\n250 ok\r\n354 go\r\n552 too big\r\n")
    assert events[-1] == SendBody()
    (done,) = engine.body_sent()
    assert isinstance(done, TransactionDone)
    assert done.result.letter == "D"
    assert done.result.text == f"{IP} failed after I sent the message." + said("552 too big")


def test_input_during_body_waits_for_body_sent() -> None:
    engine = ClientEngine(peer=IP, helo=HELO)
    engine.send_message(ONE[0])
    events = engine.receive(b"220 hi\r\n250 hi\r\n250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n")
    assert events[-1] == SendBody()  # SendBody ends the list; the 250 waits
    assert engine.receive(b"421 bye\r\n") == []
    (done,) = engine.body_sent()
    assert isinstance(done, TransactionDone) and done.result.letter == "K"
    # TransactionDone ends the list too: the 421 is read as the answer to the next MAIL.
    (again,) = engine.send_message(ONE[0])[1:]
    assert isinstance(again, TransactionDone) and again.result.letter == "Z"
    assert again.result.text.startswith(f"Connected to {IP} but sender was rejected.")


def test_too_much_said_during_body() -> None:
    engine = ClientEngine(peer=IP, helo=HELO)
    engine.send_message(ONE[0])
    engine.receive(b"220 hi\r\n250 hi\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    events = engine.receive(b"x" * 2048)
    assert [summary(e) for e in events] == ["Done Z r", "Closed"]
    assert engine.body_sent() == [] and engine.body_failed("x", permanent=True) == []


def test_partial_final_line(feed: Callable[[bytes], Iterator[bytes]]) -> None:
    script = """
        X: 0
        S: 220 mx.example ESMTP
        C: EHLO me.example
        S: 250 mx.example
        E: Ready
        C: MAIL FROM:<a@me.example>
        S: 250 ok
        C: RCPT TO:<b@x.example>
        S: 250 ok
        C: DATA
        S: 354 go ahead
        E: SendBody
        C~ no newline
        E: Done D r
        E: Closed
    """
    partial = (Transaction("a@me.example", ("b@x.example",), 10, False), b"no newline")
    driver = run(script, [partial], feed)
    text = "SMTP cannot transfer messages with partial final lines. (#5.6.2)"
    assert driver.results[0].text == text


def test_quit_paths() -> None:
    engine = ClientEngine(peer=IP, helo=HELO)
    assert engine.quit() == [Closed()]  # before the greeting: just close
    assert engine.quit() == []
    engine = ClientEngine(peer=IP, helo=HELO)
    engine.receive(b"220 hi\r\n250 hi\r\n")
    assert engine.quit() == [Send(b"QUIT\r\n")]
    assert engine.receive(b"") == [Closed()]


def test_driver_mistakes_raise() -> None:
    engine = ClientEngine(peer=IP, helo=HELO)
    engine.send_message(ONE[0])
    with pytest.raises(ClientStateError):
        engine.send_message(ONE[0])
    with pytest.raises(ClientStateError):
        engine.quit()
    for call in (engine.body_sent, engine.tls_started, lambda: engine.tls_failed("x")):
        with pytest.raises(ClientStateError):
            call()


def test_send_message_after_a_duplicate_warning() -> None:
    engine = ClientEngine(peer=IP, helo=HELO)
    engine.send_message(ONE[0])
    engine.receive(b"220 hi\r\n250 hi\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    engine.body_sent()
    (first, _) = engine.connection_lost()
    (second,) = engine.send_message(ONE[0])
    assert isinstance(first, TransactionDone) and isinstance(second, TransactionDone)
    assert "Possible duplicate!" in first.result.text
    assert second.result.text == f"Connected to {IP} but connection died. (#4.4.2)"


# -- REQUIRETLS (RFC 8689) ----------------------------------------------------------------------

SECRET = (Transaction("a@me.example", ("b@x.example",), len(BODY), False, requiretls=True), BODY)


def test_requiretls_goes_on_mail_when_offered(feed: Callable[[bytes], Iterator[bytes]]) -> None:
    script = (
        STARTTLS_OFFER
        + """
        C: STARTTLS
        S: 220 ready for tls
        E: StartTls
        T:
        C: EHLO me.example
        S: 250-mx.example
        S: 250-PIPELINING
        S: 250 REQUIRETLS
        E: Ready
        C: MAIL FROM:<a@me.example> REQUIRETLS
        C: RCPT TO:<b@x.example>
        C: DATA
        S: 250 ok
        S: 250 ok
        S: 354 go ahead
        E: SendBody
        C: Subject: hi
        C:
        C: ..dot line
        C: x
        C: .
        S: 250 ok
        E: Done K r
    """
    )
    run(script, [SECRET], feed, tls=TlsMode.REQUIRED, tls_file="REQUIRETLS", tls_permanent=True)


def test_requiretls_not_offered_is_permanent(feed: Callable[[bytes], Iterator[bytes]]) -> None:
    script = (
        STARTTLS_OFFER
        + """
        C: STARTTLS
        S: 220 ready for tls
        E: StartTls
        T:
        C: EHLO me.example
        S: 250-mx.example
        S: 250 PIPELINING
        E: Ready
        E: Done D r
    """
    )
    driver = run(script, [SECRET], feed, tls=TlsMode.REQUIRED, tls_permanent=True)
    assert driver.results[0].text == (
        "192.0.2.7 does not support REQUIRETLS, which the sender required. (#5.7.30)"
    )


def test_requiretls_without_tls_is_permanent(feed: Callable[[bytes], Iterator[bytes]]) -> None:
    script = """
        X: 0
        S: 220 mx.example ESMTP
        C: EHLO me.example
        S: 250-mx.example
        S: 250 REQUIRETLS
        C: QUIT
        E: Done D r
        E: Closed
    """
    driver = run(script, [SECRET], feed, tls=TlsMode.REQUIRED, tls_file="X", tls_permanent=True)
    assert driver.results[0].text == "No TLS achieved while X exists (#5.7.10)"
    assert driver.results[0].outcomes() == [(Outcome.PERMANENT, driver.results[0].text)]


# -- SMTPUTF8 (RFC 6531, protocols/smtp/nexthop.py) --------------------------------------------

EHLO_UTF8 = """
    X: 0
    S: 220 mx.example ESMTP
    C: EHLO me.example
    S: 250-mx.example
    S: 250 SMTPUTF8
    E: Ready
"""


def test_utf8_local_part_goes_with_smtputf8(feed: Callable[[bytes], Iterator[bytes]]) -> None:
    script = (
        EHLO_UTF8
        + """
        C: MAIL FROM:<jörg@bücher.example> SMTPUTF8
        S: 250 ok
        C: RCPT TO:<zoë@x.example>
        S: 250 ok
        C: DATA
        S: 354 go ahead
        E: SendBody
        C: abc
        C: .
        S: 250 ok
        E: Done K r
    """
    )
    tx = (Transaction("jörg@bücher.example", ("zoë@x.example",), 4, False), b"abc\n")
    run(script, [tx], feed)


def test_smtputf8_flag_alone_asks_for_smtputf8(feed: Callable[[bytes], Iterator[bytes]]) -> None:
    script = (
        EHLO_UTF8
        + """
        C: MAIL FROM:<a@me.example> SMTPUTF8
        S: 250 ok
        C: RCPT TO:<b@bücher.example>
        S: 250 ok
        C: DATA
        S: 354 go ahead
        E: SendBody
        C: abc
        C: .
        S: 250 ok
        E: Done K r
    """
    )
    tx = Transaction("a@me.example", ("b@bücher.example",), 4, False, smtputf8=True)
    run(script, [(tx, b"abc\n")], feed)


def test_no_smtputf8_at_the_hop_fails_permanently_and_sends_nothing(
    feed: Callable[[bytes], Iterator[bytes]],
) -> None:
    # The first needs SMTPUTF8 (a UTF-8 local part), the second only has a U-label domain:
    # that one goes, its domain as A-labels (RFC 6531 3.2), with no SMTPUTF8 parameter.
    script = """
        X: 0
        S: 220 mx.example ESMTP
        C: EHLO me.example
        S: 250-mx.example
        S: 250 8BITMIME
        E: Ready
        E: Done D r
        X: 1
        C: MAIL FROM:<a@xn--bcher-kva.example>
        S: 250 ok
        C: RCPT TO:<b@xn--mnchen-3ya.example>
        S: 250 ok
        C: DATA
        S: 354 go ahead
        E: SendBody
        C: abc
        C: .
        S: 250 ok
        E: Done K r
    """
    utf8 = (Transaction("a@me.example", ("jörg@x.example",), 4, False), b"abc\n")
    idna = (Transaction("a@bücher.example", ("b@München.example",), 4, False), b"abc\n")
    driver = run(script, [utf8, idna], feed)
    assert driver.results[0].text == (
        f"{IP} does not support SMTPUTF8 and the message needs it"
        " (a UTF-8 address or a message sent with SMTPUTF8). (#5.6.7)"
    )
    assert driver.results[0].outcomes()[0][0] is Outcome.PERMANENT


def test_smtputf8_flag_without_the_extension_fails(
    feed: Callable[[bytes], Iterator[bytes]],
) -> None:
    script = """
        X: 0
        S: 220 mx.example ESMTP
        C: EHLO me.example
        S: 250 mx.example
        E: Ready
        E: Done D r
    """
    tx = Transaction("a@me.example", ("b@x.example",), 4, False, smtputf8=True)
    driver = run(script, [(tx, b"abc\n")], feed)
    assert "(#5.6.7)" in driver.results[0].text
