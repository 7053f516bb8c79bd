"""Golden C:/S: transcripts through Pop3Connection, fed in one chunk and byte by byte.

Transcript lines (tests/protocols/golden/pop3/*.txt), as for SMTP (test_smtp_golden.py):
  ``C: text``  the client sends text + CRLF       ``C~ text``  raw, backslash escapes, no CRLF
  ``S: text``  one line the server sends          ``O: k=v``   Pop3Connection options
  ``T:``       the TLS handshake happens here (if an STLS was answered +OK)
  ``# ...``    comment
The client bytes are followed by EOF; the S: lines must be the whole output.  The fake
driver answers as qmail-popup + vchkpw + qmail-pop3d would (spec 19), with the RFC 2195
timestamp as its APOP/CRAM-MD5 challenge.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from qtoaster.protocols import sasl
from qtoaster.protocols.pop3 import events as ev
from qtoaster.protocols.pop3 import server as pop
from qtoaster.protocols.pop3.multiline import wire_size
from qtoaster.protocols.pop3.server import NEED_DATA, Pop3Connection, State

GOLDEN = Path(__file__).parent / "golden" / "pop3"
TIMESTAMP = "<1896.697170952@postoffice.reston.mci.net>"  # RFC 2195's challenge
USERS = {"tim": "tanstaaftanstaaf", "alice": "secret"}
CAPA = ["TOP", "UIDL", "LAST", "USER", "APOP", "SASL CRAM-MD5"]  # the seed's, spec 19.3
MAILBOX = [
    ("1700000001.M1P1.host", b"Subject: one\n\nhello\n.dot line\n"),
    ("1700000002.M2P1.host", b"Subject: two\nX: y\n\nbody 1\nbody 2\nbody 3\n"),
    ("1700000003.M3P1.host", b"Subject: three\r\n\r\nCRLF stored, no final newline"),
]


@dataclass
class FakeDriver:
    conn: Pop3Connection
    deleted: set[int] = field(default_factory=set)
    last: int = 0
    sasl: sasl.SaslServer | None = None

    def pump(self) -> None:
        while (event := self.conn.next_event()) is not NEED_DATA:
            self.answer(event)

    def login(self, user: str, check: Callable[[str], bool]) -> None:
        password = USERS.get(user)
        if password is not None and check(password):
            self.conn.logged_in()
        else:
            self.conn.close_after_send()  # qmail-popup exits (spec 19.2)
            self.conn.err(pop.AUTHORIZATION_FAILED)

    def answer(self, event: ev.Event) -> None:
        conn = self.conn
        match event:
            case ev.User() | ev.Noop() | ev.Quit():
                conn.ok()
            case ev.Pass(password=password):
                self.login(conn.user or "", lambda pw: pw == password)
            case ev.Apop(name=name, digest=digest):
                self.login(
                    name, lambda pw: hashlib.md5((TIMESTAMP + pw).encode()).hexdigest() == digest
                )
            case ev.Auth(mechanism=""):
                conn.multiline("", ["CRAM-MD5"])
            case ev.Auth(mechanism=mechanism, initial_response=response):
                if sasl.parse_mechanism(mechanism) is not sasl.Mechanism.CRAM_MD5:
                    conn.err("unimplemented")
                    return
                self.sasl = sasl.SaslServer(
                    sasl.Mechanism.CRAM_MD5, cram_challenge=TIMESTAMP.encode()
                )
                self.sasl_outcome(self.sasl.start(response))
            case ev.AuthLine(data=data):
                assert self.sasl is not None
                self.sasl_outcome(self.sasl.step(data))
            case ev.Capa():
                conn.multiline(
                    pop.CAPABILITY_FIRST_LINE,
                    CAPA if conn.state is State.AUTHORIZATION else CAPA[:3],
                )
            case ev.Stls():
                conn.ok("Begin TLS negotiation")
            case ev.Stat():
                live = [n for n in range(1, len(MAILBOX) + 1) if n not in self.deleted]
                conn.ok(f"{len(live)} {sum(self.size(n) for n in live)}")
            case ev.List(number=None) | ev.Uidl(number=None):
                show = self.size if isinstance(event, ev.List) else self.uid
                live = [n for n in range(1, len(MAILBOX) + 1) if n not in self.deleted]
                conn.multiline("", [f"{n} {show(n)}" for n in live])
            case ev.List(number=n) | ev.Uidl(number=n):
                assert n is not None
                show = self.size if isinstance(event, ev.List) else self.uid
                if self.check(n):
                    conn.ok(f"{n} {show(n)}")
            case ev.Retr(number=n):
                if self.check(n):
                    self.stream(MAILBOX[n - 1][1])
            case ev.Top(number=n, lines=lines):
                if self.check(n):
                    self.stream(top(MAILBOX[n - 1][1], lines))
            case ev.Dele(number=n):
                if self.check(n):
                    self.deleted.add(n)
                    self.last = max(self.last, n)
                    conn.ok()
            case ev.Rset():
                self.deleted.clear()
                self.last = 0
                conn.ok()
            case ev.Last():
                conn.ok(str(self.last))
            case ev.ConnectionClosed():
                pass
            case _:
                raise AssertionError(event)

    def sasl_outcome(self, outcome: object) -> None:
        if isinstance(outcome, sasl.Challenge):
            self.conn.challenge(outcome.text)
        elif isinstance(outcome, sasl.CramCredentials):
            challenge, digest = outcome.challenge, outcome.digest
            self.login(
                outcome.user,
                lambda pw: hmac.new(pw.encode(), challenge, "md5").hexdigest() == digest,
            )
        elif isinstance(outcome, sasl.Failure):
            self.conn.err(outcome.reply.text.split(" (#")[0])
        else:
            raise AssertionError(outcome)

    def check(self, n: int) -> bool:
        if n > len(MAILBOX):
            self.conn.err(pop.NOT_THAT_MANY)
        elif n in self.deleted:
            self.conn.err(pop.ALREADY_DELETED)
        return n <= len(MAILBOX) and n not in self.deleted

    def size(self, n: int) -> int:
        return wire_size([MAILBOX[n - 1][1]])

    def uid(self, n: int) -> str:
        return MAILBOX[n - 1][0]

    def stream(self, data: bytes) -> None:
        self.conn.send_multiline_start()
        for i in range(0, len(data), 7):  # chunks cut anywhere, mid-line and mid-CRLF
            self.conn.send_multiline_chunk(data[i : i + 7])
        self.conn.send_multiline_end()

    def handshake(self) -> None:
        if self.conn.state is State.TLS_PENDING:
            self.conn.discard_input()
            self.conn.start_tls_done()


def top(message: bytes, lines: int | None) -> bytes:
    """The header, the blank line and ``lines`` body lines (all of it for None)."""
    if lines is None:
        return message
    head, sep, body = message.replace(b"\r\n", b"\n").partition(b"\n\n")
    return head + sep + b"".join(body.splitlines(keepends=True)[:lines])


@dataclass
class Transcript:
    phases: list[bytes]
    server: bytes
    options: dict[str, int]


def unescape(text: str) -> bytes:
    return text.encode("utf-8").decode("unicode_escape").encode("latin-1")


def load(path: Path) -> Transcript:
    phases, server = [bytearray()], bytearray()
    options: dict[str, int] = {}
    for line in path.read_text(encoding="utf-8").split("\n"):
        tag, body = line[:2], line[3:]
        if tag == "C:":
            phases[-1] += body.encode() + b"\r\n"
        elif tag == "C~":
            phases[-1] += unescape(body)
        elif tag == "T:":
            phases.append(bytearray())
        elif tag == "S:":
            server += body.encode() + b"\r\n"
        elif tag == "O:":
            options.update((k, int(v)) for k, v in (w.split("=") for w in body.split()))
        else:
            assert line == "" or line.startswith("#"), f"{path.name}: bad line {line!r}"
    return Transcript([bytes(p) for p in phases], bytes(server), options)


def run(transcript: Transcript, split: Callable[[bytes], list[bytes]]) -> bytes:
    conn = Pop3Connection(**transcript.options)  # type: ignore[arg-type]
    driver = FakeDriver(conn)
    conn.ok(TIMESTAMP)  # the greeting, spec 19.2
    for number, phase in enumerate(transcript.phases):
        if number:
            driver.handshake()
        for chunk in split(phase):
            conn.receive_data(chunk)
            driver.pump()
    conn.receive_data(b"")
    driver.pump()
    assert conn.closed
    return conn.data_to_send()


TRANSCRIPTS = sorted(GOLDEN.glob("*.txt"))


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=[p.stem for p in TRANSCRIPTS])
def test_golden_one_chunk(path: Path) -> None:
    transcript = load(path)
    out = run(transcript, lambda data: [data])
    assert out.decode("utf-8", "replace").split("\r\n") == transcript.server.decode().split("\r\n")


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=[p.stem for p in TRANSCRIPTS])
def test_golden_byte_by_byte(path: Path) -> None:
    transcript = load(path)
    bytewise = run(transcript, lambda data: [data[i : i + 1] for i in range(len(data))])
    assert bytewise == run(transcript, lambda data: [data])


def test_there_are_goldens() -> None:
    assert len(TRANSCRIPTS) >= 9
