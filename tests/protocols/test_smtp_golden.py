"""Golden C:/S: transcripts through ServerConnection, fed in one chunk and byte by byte.

Transcript lines (tests/protocols/golden/*.txt):
  ``C: text``  the client sends text + CRLF       ``C~ text``  raw, backslash escapes, no CRLF
  ``S: text``  one reply line the server sends    ``D: text``  a message the driver received
  ``O: k=v``   ServerConnection limits             ``# ...``    comment
The client bytes are concatenated and followed by EOF; the S: lines must be the whole output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from qtoaster.core import reply as R
from qtoaster.core.envelope import split_address
from qtoaster.core.reply import Reply
from qtoaster.protocols.smtp import events as ev
from qtoaster.protocols.smtp.server import NEED_DATA, ServerConnection

GOLDEN = Path(__file__).parent / "golden"
ME = "mail.example.test"
DATABYTES = 10_000


@dataclass
class FakeDriver:
    """Answers like a vanilla qmail-smtpd with rcpthosts=example.test and databytes=10000."""

    conn: ServerConnection
    messages: list[bytes] = field(default_factory=list)
    spool: bytearray = field(default_factory=bytearray)

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
                return Reply(250, f"{ME}\nPIPELINING\n8BITMIME\nSIZE {DATABYTES}")
            case ev.Helo():
                return Reply(250, ME)
            case ev.MailFrom(size=size):
                return R.DATABYTES if size is not None and size > DATABYTES else R.OK
            case ev.RcptTo(address=address):
                domain = split_address(address)[1]
                return R.OK if domain in ("", "example.test") else R.NOT_RCPTHOSTS
            case ev.Data():
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
            case ev.DataAborted() | ev.ConnectionClosed():
                self.spool.clear()
                return None
        raise AssertionError(event)


@dataclass
class Transcript:
    client: bytes
    server: bytes
    messages: list[bytes]
    options: dict[str, int]


def unescape(text: str) -> bytes:
    return text.encode("utf-8").decode("unicode_escape").encode("latin-1")


def load(path: Path) -> Transcript:
    client, server = bytearray(), bytearray()
    messages: list[bytes] = []
    options: dict[str, int] = {}
    for line in path.read_text(encoding="utf-8").split("\n"):
        tag, body = line[:2], line[3:]
        if tag == "C:":
            client += body.encode() + b"\r\n"
        elif tag == "C~":
            client += unescape(body)
        elif tag == "S:":
            server += body.encode() + b"\r\n"
        elif tag == "D:":
            messages.append(unescape(body))
        elif tag == "O:":
            options.update((k, int(v)) for k, v in (w.split("=") for w in body.split()))
        else:
            assert line == "" or line.startswith("#"), f"{path.name}: bad line {line!r}"
    return Transcript(bytes(client), bytes(server), messages, options)


def run(transcript: Transcript, chunks: list[bytes]) -> tuple[bytes, list[bytes]]:
    conn = ServerConnection(**transcript.options)
    driver = FakeDriver(conn)
    driver.start()
    for chunk in [*chunks, b""]:
        conn.receive_data(chunk)
        driver.pump()
    assert conn.closed
    return conn.data_to_send(), driver.messages


TRANSCRIPTS = sorted(GOLDEN.glob("*.txt"))


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=[p.stem for p in TRANSCRIPTS])
def test_golden_one_chunk(path: Path) -> None:
    transcript = load(path)
    out, messages = run(transcript, [transcript.client])
    assert out.decode("utf-8", "replace").split("\r\n") == transcript.server.decode().split("\r\n")
    assert messages == transcript.messages


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=[p.stem for p in TRANSCRIPTS])
def test_golden_byte_by_byte(path: Path) -> None:
    transcript = load(path)
    data = transcript.client
    assert run(transcript, [data[i : i + 1] for i in range(len(data))]) == run(transcript, [data])


def test_there_are_goldens() -> None:
    assert len(TRANSCRIPTS) >= 10
