"""Golden C:/S: transcripts through ImapConnection, fed in one chunk and byte by byte.

Transcript lines (tests/protocols/golden/imap/*.txt), as for POP3 (test_pop3_golden.py):
  ``C: text``  the client sends text + CRLF       ``C~ text``  raw, backslash escapes, no CRLF
  ``S: text``  one line the server sends          ``O: k=v``   ImapConnection options
  ``T:``       the TLS handshake happens here (if a STARTTLS was answered OK)
  ``# ...``    comment
The client bytes are followed by EOF; the S: lines must be the whole output. The fake
session below answers like a minimal imapd: LOGIN alice/secret, AUTHENTICATE PLAIN with or
without SASL-IR, SELECT enters SELECTED, IDLE, STARTTLS, LOGOUT; every other command gets
``tag OK <NAME> completed``. Both feedings must give the same events and the same bytes.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from qtoaster.protocols.imap import commands as c
from qtoaster.protocols.imap import events as ev
from qtoaster.protocols.imap.server import NEED_DATA, ImapConnection, State

GOLDEN = Path(__file__).parent / "golden" / "imap"
PLAIN_OK = base64.b64encode(b"\0alice\0secret").decode()


@dataclass
class FakeSession:
    conn: ImapConnection
    events: list[object] = field(default_factory=list)
    auth_tag: str = ""
    idle_tag: str = ""
    tls_pending: bool = False

    def pump(self) -> None:
        while (event := self.conn.next_event()) is not NEED_DATA:
            self.events.append(event)
            self.answer(event)

    def login(self, tag: str, ok: bool) -> None:
        if ok:
            self.conn.state = State.AUTHENTICATED
            self.conn.tagged(tag, "OK", "Logged in")
        else:
            self.conn.tagged(tag, "NO", "Authentication failed.", "AUTHENTICATIONFAILED")

    def answer(self, event: object) -> None:
        conn = self.conn
        match event:
            case c.Command(tag=tag, body=c.Login(user=user, password=password)):
                self.login(tag, (user, password) == ("alice", "secret"))
            case c.Command(tag=tag, body=c.Authenticate(mechanism="PLAIN", initial=None)):
                self.auth_tag = tag
                conn.continuation("")
                conn.expect_auth_line()
            case c.Command(tag=tag, body=c.Authenticate(mechanism="PLAIN", initial=initial)):
                self.login(tag, initial == PLAIN_OK)
            case c.Command(tag=tag, body=c.Authenticate()):
                conn.tagged(tag, "NO", "Unsupported authentication mechanism.")
            case ev.AuthLine(text="*"):
                conn.tagged(self.auth_tag, "BAD", "Authentication aborted by client.")
            case ev.AuthLine(text=text):
                self.login(self.auth_tag, text == PLAIN_OK)
            case c.Command(tag=tag, body=c.StartTls()):
                conn.tagged(tag, "OK", "Begin TLS negotiation now.")
                conn.start_tls()
                self.tls_pending = True
            case c.Command(tag=tag, body=c.Select(mailbox=mailbox, readonly=readonly)):
                conn.untagged("3 EXISTS")
                conn.state = State.SELECTED
                code = "READ-ONLY" if readonly else "READ-WRITE"
                conn.tagged(tag, "OK", f"{mailbox} selected", code)
            case c.Command(tag=tag, body=c.Close() | c.Unselect()):
                conn.state = State.AUTHENTICATED
                conn.tagged(tag, "OK", "done")
            case c.Command(tag=tag, body=c.Idle()):
                self.idle_tag = tag
                conn.continuation("idling")
                conn.start_idle()
            case c.IdleDone(bad=False):
                conn.tagged(self.idle_tag, "OK", "Idle completed.")
            case c.IdleDone(bad=True):
                pass  # the engine answered BAD itself
            case c.Command(tag=tag, body=c.Logout()):
                conn.untagged("BYE Logging out")
                conn.tagged(tag, "OK", "Logout completed.")
                conn.state = State.LOGOUT
                conn.close_after_send()
            case c.Command(tag=tag, body=c.Append(messages=messages)):
                sizes = " ".join(str(len(m.data)) for m in messages)
                conn.tagged(tag, "OK", f"APPEND completed {sizes}")
            case c.Command(tag=tag, body=body, uid=uid):
                name = type(body).__name__.upper()
                conn.tagged(tag, "OK", ("UID " if uid else "") + name + " completed")
            case ev.ConnectionClosed():
                pass
            case _:
                raise AssertionError(event)

    def handshake(self) -> None:
        if self.tls_pending:
            self.conn.discard_input()
            self.conn.start_tls_done()
            self.tls_pending = False


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


def run(
    transcript: Transcript, split: Callable[[bytes], list[bytes]]
) -> tuple[bytes, list[object]]:
    conn = ImapConnection(**transcript.options)  # type: ignore[arg-type]
    session = FakeSession(conn)
    conn.untagged("OK [CAPABILITY IMAP4rev2 IMAP4rev1 LITERAL+] ready.")
    out = bytearray()
    for number, phase in enumerate(transcript.phases):
        if number:
            session.handshake()
        for chunk in split(phase):
            conn.receive_data(chunk)
            session.pump()
            out += conn.data_to_send()
    if not conn.closed:
        conn.receive_data(b"")
        session.pump()
    out += conn.data_to_send()
    assert conn.closed
    return bytes(out), session.events


TRANSCRIPTS = sorted(GOLDEN.glob("*.txt"))


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=[p.stem for p in TRANSCRIPTS])
def test_golden_one_chunk(path: Path) -> None:
    transcript = load(path)
    out, _ = run(transcript, lambda data: [data])
    assert out.decode("utf-8", "replace").split("\r\n") == transcript.server.decode().split("\r\n")


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=[p.stem for p in TRANSCRIPTS])
def test_golden_byte_by_byte(path: Path) -> None:
    transcript = load(path)
    bytewise = run(transcript, lambda data: [data[i : i + 1] for i in range(len(data))])
    assert bytewise == run(transcript, lambda data: [data])


def test_there_are_goldens() -> None:
    assert len(TRANSCRIPTS) >= 8
