"""Golden C:/S: transcripts through ServerConnection, fed in one chunk and byte by byte.

Transcript lines (tests/protocols/golden/*.txt):
  ``C: text``  the client sends text + CRLF       ``C~ text``  raw, backslash escapes, no CRLF
  ``S: text``  one reply line the server sends    ``D: text``  a message the driver received
  ``O: k=v``   ServerConnection limits             ``# ...``    comment
  ``T:``       the TLS handshake happens here: if a STARTTLS was answered 220, the driver
               calls discard_input() and start_tls_done() (the client bytes before ``T:`` are
               clear text, those after it come through TLS)
The client bytes are concatenated and followed by EOF; the S: lines must be the whole output.
Each run feeds every phase (the bytes between ``T:`` lines) in one chunk, or byte by byte.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from qtoaster.core import reply as R
from qtoaster.core.envelope import split_address
from qtoaster.core.reply import Reply
from qtoaster.protocols.smtp import events as ev
from qtoaster.protocols.smtp.server import NEED_DATA, ServerConnection
from qtoaster.protocols.smtp.states import State
from qtoaster.smtpd.addresses import utf8_refusal

GOLDEN = Path(__file__).parent / "golden"
ME = "mail.example.test"
DATABYTES = 10_000
USERS = {b"alice": b"secret"}
BUECHER = "xn--bcher-kva.example"  # rcpthosts lists bücher.example: core/domain.domain_key

# The auth patch's replies (spec 6.2, 26).
AUTH_OK = Reply(235, "ok, go ahead (#2.0.0)")
AUTH_FAILED = Reply(535, "authentication failed (#5.7.1)")
AUTH_TWICE = Reply(503, "you're already authenticated (#5.5.0)")
AUTH_IN_MAIL = Reply(503, "no auth during mail transaction (#5.5.0)")
AUTH_TYPE = Reply(504, "auth type unimplemented (#5.5.1)")
AUTH_CANCELED = Reply(501, "auth exchange canceled (#5.0.0)")
AUTH_MALFORMED = Reply(501, "malformed auth input (#5.5.4)")
TLS_READY = Reply(220, "ready for tls")


@dataclass
class FakeSasl:
    """Just enough of the auth patch's PLAIN and LOGIN (spec 6.2) to drive the engine."""

    mechanism: str
    fields: list[bytes] = field(default_factory=list)

    def prompt(self) -> Reply:
        if self.mechanism == "PLAIN":
            return Reply(334, "")
        return Reply(334, "UGFzc3dvcmQ6" if self.fields else "VXNlcm5hbWU6")

    def step(self, data: str) -> Reply | bool:
        """A reply, or whether the credentials are right."""
        try:
            decoded = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            return AUTH_MALFORMED
        if not decoded:
            return AUTH_MALFORMED  # qmail's authgetl: an empty line is malformed
        self.fields.append(decoded)
        if self.mechanism == "LOGIN" and len(self.fields) < 2:
            return self.prompt()
        if self.mechanism == "PLAIN":
            parts = decoded.split(b"\0")
            user, password = (parts[1], parts[2]) if len(parts) == 3 else (b"", b"")
        else:
            user, password = self.fields
        if not user or not password:
            return AUTH_MALFORMED
        return USERS.get(user) == password


@dataclass
class FakeDriver:
    """Answers like a vanilla qmail-smtpd with rcpthosts=example.test and databytes=10000."""

    conn: ServerConnection
    messages: list[bytes] = field(default_factory=list)
    spool: bytearray = field(default_factory=bytearray)
    authenticated: bool = False
    sasl: FakeSasl | None = None
    smtputf8: bool = False  # the transaction's MAIL had SMTPUTF8 (RFC 6531)

    def start(self) -> None:
        self.conn.send(Reply(220, f"{ME} ESMTP"))

    def pump(self) -> None:
        while True:
            event = self.conn.next_event()
            if event is NEED_DATA:
                return
            answer = self.answer(event)
            if answer is not None:
                self.conn.send(answer)

    def answer(self, event: ev.Event) -> Reply | None:
        match event:
            case ev.Helo(extended=True):
                return Reply(250, f"{ME}\nPIPELINING\n8BITMIME\nSMTPUTF8\nSIZE {DATABYTES}")
            case ev.Helo():
                return Reply(250, ME)
            case ev.MailFrom(address=address, params=params, size=size):
                return self.mail(address, params, size)
            case ev.RcptTo(address=address):
                refusal = utf8_refusal(address, self.smtputf8)
                if refusal is not None:
                    return refusal
                domain = split_address(address)[1]
                return R.OK if domain in ("", "example.test", BUECHER) else R.NOT_RCPTHOSTS
            case ev.Data() | ev.Bdat():
                self.spool.clear()
                return R.GO_AHEAD
            case ev.DataChunk(data=data):
                self.spool += data
                return None
            case ev.DataEnd(hops=hops):
                if hops >= 100:
                    return R.TOO_MANY_HOPS
                self.messages.append(bytes(self.spool))
                return Reply(250, f"ok 1700000000 qp 4242 hops={hops}")
            case ev.Rset():
                return R.FLUSHED
            case ev.Noop():
                return R.OK
            case ev.Vrfy():
                return R.VRFY
            case ev.Help():
                return R.HELP
            case ev.Quit():
                return Reply(221, ME)
            case ev.Auth(mechanism=mechanism, initial_response=response):
                return self.auth(mechanism, response)
            case ev.AuthLine(data=data):
                return AUTH_CANCELED if data == "*" else self.auth_step(data)
            case ev.StartTls():
                return TLS_READY
            case ev.DataAborted() | ev.ConnectionClosed():
                self.spool.clear()
                return None
        raise AssertionError(event)

    def mail(self, address: str, params: dict[str, str | None], size: int | None) -> Reply:
        if params.get("SMTPUTF8") is not None:
            return R.SMTPUTF8_VALUE
        refusal = utf8_refusal(address, "SMTPUTF8" in params)
        if refusal is not None:
            return refusal
        if size is not None and size > DATABYTES:
            return R.DATABYTES
        self.smtputf8 = "SMTPUTF8" in params
        return R.OK

    def auth(self, mechanism: str, response: str | None) -> Reply:
        # The auth patch's order of checks (spec 6.2).
        if self.authenticated:
            return AUTH_TWICE
        if self.conn.state is not State.COMMAND:
            return AUTH_IN_MAIL
        if mechanism not in ("PLAIN", "LOGIN"):
            return AUTH_TYPE
        self.sasl = FakeSasl(mechanism)
        return self.sasl.prompt() if response is None else self.auth_step(response)

    def auth_step(self, data: str) -> Reply:
        assert self.sasl is not None
        result = self.sasl.step(data)
        if isinstance(result, Reply):
            return result
        self.authenticated = result
        return AUTH_OK if result else AUTH_FAILED

    def handshake(self) -> None:
        """The TLS handshake succeeded (RFC 3207 4.2: forget AUTH too)."""
        if self.conn.state is State.TLS_PENDING:
            self.conn.discard_input()
            self.conn.start_tls_done()
            self.authenticated = False


@dataclass
class Transcript:
    phases: list[bytes]  # client bytes, split at the T: (handshake) lines
    server: bytes
    messages: list[bytes]
    options: dict[str, int]


def unescape(text: str) -> bytes:
    return text.encode("utf-8").decode("unicode_escape").encode("latin-1")


def load(path: Path) -> Transcript:
    phases, server = [bytearray()], bytearray()
    messages: list[bytes] = []
    options: dict[str, int] = {}
    for line in path.read_text(encoding="utf-8").split("\n"):
        tag, body = line[:2], line[3:]
        client = phases[-1]
        if tag == "C:":
            client += body.encode() + b"\r\n"
        elif tag == "C~":
            client += unescape(body)
        elif tag == "T:":
            phases.append(bytearray())
        elif tag == "S:":
            server += body.encode() + b"\r\n"
        elif tag == "D:":
            messages.append(unescape(body))
        elif tag == "O:":
            options.update((k, int(v)) for k, v in (w.split("=") for w in body.split()))
        else:
            assert line == "" or line.startswith("#"), f"{path.name}: bad line {line!r}"
    return Transcript([bytes(p) for p in phases], bytes(server), messages, options)


def whole(data: bytes) -> list[bytes]:
    return [data]


def byte_by_byte(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def run(transcript: Transcript, split: Callable[[bytes], list[bytes]]) -> tuple[bytes, list[bytes]]:
    conn = ServerConnection(**transcript.options)  # type: ignore[arg-type]
    driver = FakeDriver(conn)
    driver.start()
    for number, phase in enumerate(transcript.phases):
        if number:
            driver.handshake()
        for chunk in split(phase):
            conn.receive_data(chunk)
            driver.pump()
    conn.receive_data(b"")
    driver.pump()
    assert conn.closed
    return conn.data_to_send(), driver.messages


TRANSCRIPTS = sorted(GOLDEN.glob("*.txt"))


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=[p.stem for p in TRANSCRIPTS])
def test_golden_one_chunk(path: Path) -> None:
    transcript = load(path)
    out, messages = run(transcript, whole)
    assert out.decode("utf-8", "replace").split("\r\n") == transcript.server.decode().split("\r\n")
    assert messages == transcript.messages


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=[p.stem for p in TRANSCRIPTS])
def test_golden_byte_by_byte(path: Path) -> None:
    transcript = load(path)
    assert run(transcript, byte_by_byte) == run(transcript, whole)


def test_there_are_goldens() -> None:
    assert len(TRANSCRIPTS) >= 10
