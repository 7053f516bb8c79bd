"""ClientEngine: the sans-IO SMTP client dialog of qmail-remote (spec 17.3-17.5).

The driver feeds the peer's bytes to :meth:`ClientEngine.receive` and acts on the returned
events in order (:mod:`~qtoaster.protocols.smtp.client_events`): write each ``Send``,
handshake on ``StartTls``, stream the body on ``SendBody``, close on ``Closed``.

Dialog: 220 greeting -> ``EHLO`` (not 250: ``HELO``) -> ``STARTTLS`` when offered (unless
``TlsMode.NONE`` or already in TLS) -> 220 -> handshake -> ``EHLO`` again -> ``Ready``.  Each
transaction is ``MAIL``, the ``RCPT`` s and ``DATA`` (one write with PIPELINING, RFC 2920 3.1,
replies matched in order; else one command per reply), then the body and the final reply.
A ``binarymime`` transaction (RFC 3030) has no ``DATA``: after the envelope replies the
engine emits ``SendChunk`` and the driver calls ``chunk`` per ``BDAT`` (``bdatsend.py``).
After ``TransactionDone`` the connection can carry another transaction (``RSET`` first when
the last one failed) or ``quit()``.  Report texts are qmail-remote's, byte for byte; a text
that follows a remote reply ends with ``\\nRemote host said: <reply lines>\\n`` (outsmtptext).

Deliberate choices (qmail-remote or the RFCs where they say something):

- Greeting 4xx/5xx: ``QUIT`` is written (RFC 5321 3.1 asks for it after a 554), then
  ``SkipHost`` and ``Closed``; the transaction is not reported (the driver tries the next MX).
- A session failure (greeting, name, TLS) writes ``QUIT`` without waiting for its answer
  (qmail: "waiting for remote side is just too ridiculous"), reports the transaction and
  closes; with no transaction yet the result is kept for the next ``send_message``.
- A malformed reply (no 3-digit code 2xx-5xx, a line over ``MAX_REPLY_LINE`` bytes with its
  CRLF, more than ``MAX_REPLY_LINES`` lines, ``MAX_REPLY_LINE`` bytes more while the body goes
  out) is ``Z Connected to <ip> but it sent a malformed reply. (#4.4.2)`` and the connection closes.
- Connection lost: ``Z Connected to <ip> but connection died. (#4.4.2)``; after the final dot
  qmail-remote puts ``Possible duplicate! `` before ``(#4.4.2)``, and so do we.
- A 354 to DATA when no recipient was accepted (PIPELINING): a lone ``.`` ends the empty
  message and its reply is ignored (RFC 2920 3.1).

Invariants: no I/O imports; after ``receive`` the input buffered is under ``MAX_REPLY_LINE``
bytes, except what arrived in the same chunk after a reply that ends an event list (below),
plus under ``MAX_REPLY_LINE`` more while the body goes out; a reply has at most
``MAX_REPLY_LINES`` lines; bytes received after a 220 to STARTTLS and before ``tls_started``
are dropped (RFC 3207 5, CVE-2011-0411); ``StartTls``, ``SendBody``, ``SendChunk``, a ``Ready`` or
``TransactionDone`` that leaves the session idle end their event list (later input is read by
``tls_started``, ``body_sent``, ``send_message`` or ``quit``), so no chunking of the input
changes the dialog; one transaction at a time; ``Closed`` is emitted once and every later call
returns nothing (``send_message`` returns the failure).
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from qtoaster.core.errors import ProtocolError
from qtoaster.protocols.linereader import LineReader
from qtoaster.protocols.smtp import nexthop
from qtoaster.protocols.smtp.bdatsend import bdat_command
from qtoaster.protocols.smtp.bodyencode import PARTIAL_LINE_TEXT, BodyEncoder, PartialLineError
from qtoaster.protocols.smtp.client_events import (
    Closed,
    Event,
    Ready,
    RecipientReport,
    Send,
    SendBody,
    SendChunk,
    SkipHost,
    StartTls,
    TlsMode,
    Transaction,
    TransactionDone,
    TransactionResult,
)
from qtoaster.protocols.smtp.clientreply import (
    MAX_REPLY_LINE,
    MAX_REPLY_LINES,
    Malformed,
    Reply,
    ReplyReader,
    fail_letter,
    parse_ehlo,
)
from qtoaster.protocols.smtp.esmtpparams import mail_params, rcpt_params
from qtoaster.protocols.smtp.nexthop import wire_address

__all__ = [
    "MAX_REPLY_LINE",
    "MAX_REPLY_LINES",
    "PARTIAL_LINE_TEXT",
    "BodyEncoder",
    "ClientEngine",
    "ClientStateError",
    "Closed",
    "Event",
    "PartialLineError",
    "Ready",
    "RecipientReport",
    "Send",
    "SendBody",
    "SendChunk",
    "SkipHost",
    "StartTls",
    "TlsMode",
    "Transaction",
    "TransactionDone",
    "TransactionResult",
]

QUIT = b"QUIT\r\n"


class ClientStateError(ProtocolError, RuntimeError):
    """The driver called the engine out of turn (a driver bug, never the peer's doing)."""


class _S(enum.Enum):
    GREETING = "greeting"
    EHLO = "ehlo"
    HELO = "helo"
    STARTTLS = "starttls"
    TLS_WAIT = "tls-wait"  # StartTls emitted, handshake not done
    EHLO_TLS = "ehlo-tls"
    READY = "ready"  # idle, or a transaction waiting for a check that sends nothing
    TX = "tx"  # RSET/MAIL/RCPT/DATA replies outstanding
    BODY = "body"  # SendBody emitted, body_sent() not yet called: input is only buffered
    FINAL = "final"  # the dot or BDAT LAST is out, waiting for the final reply
    CHUNK = "chunk"  # SendChunk emitted, chunk() not yet called: input is only buffered
    BDAT = "bdat"  # a BDAT chunk (not the last) is out, waiting for its reply
    DISCARD = "discard"  # a lone dot after an unwanted 354; its reply is ignored
    QUIT = "quit"
    CLOSED = "closed"


@dataclass
class _Run:
    """One transaction on the wire: commands still to send and replies still to come."""

    tx: Transaction
    pipelined: bool
    to_send: deque[tuple[str, bytes]]
    awaiting: deque[str] = field(default_factory=deque)
    reports: list[RecipientReport | None] = field(default_factory=list)
    failure: tuple[str, str] | None = None  # the MAIL refusal or "Giving up"


class ClientEngine:
    def __init__(
        self,
        *,
        peer: str,
        helo: str,
        tls: TlsMode = TlsMode.OPPORTUNISTIC,
        tls_file: str = "",
        tls_active: bool = False,
        tls_permanent: bool = False,
    ) -> None:
        """*tls_permanent*: a REQUIRED TLS that fails is a permanent failure (``D``, #5.7.10,
        RFC 8689 REQUIRETLS) instead of qmail-tls's deferral."""
        self._peer = peer
        self._tls_permanent = tls_permanent
        self._helo = helo.encode("utf-8", "surrogateescape")
        self._tls_mode = tls
        self._tls_file = tls_file
        self._tls_active = tls_active
        self._state = _S.GREETING
        self._in = LineReader()
        self._replies = ReplyReader()  # the reply being read
        self._extensions: dict[str, str | None] = {}
        self._ready = False
        self._tx: Transaction | None = None
        self._run: _Run | None = None
        self._result: TransactionResult | None = None  # known before the DISCARD dot's reply
        self._dirty = False  # the last transaction failed after commands went out
        self._failure: tuple[str, str] | None = None  # why the session ended

    @property
    def extensions(self) -> Mapping[str, str | None]:
        return MappingProxyType(self._extensions)

    @property
    def tls_active(self) -> bool:
        return self._tls_active

    @property
    def buffered(self) -> int:
        """Input bytes received and not yet read as part of a complete reply line."""
        return self._in.buffered

    @property
    def ready(self) -> bool:
        """The session is usable (Ready was emitted) and not closed."""
        return self._ready and self._state not in (_S.CLOSED, _S.QUIT)

    # -- driver calls -----------------------------------------------------------------------

    def send_message(self, tx: Transaction) -> list[Event]:
        """Start ``tx`` now if the session is ready, else when it becomes ready."""
        if self._tx is not None:
            raise ClientStateError("a transaction is already in progress")
        if self._state is _S.CLOSED:
            letter, text = self._failure or ("Z", self._died())
            return [TransactionDone(self._result_for(tx, letter, text))]
        if self._state is _S.QUIT:
            raise ClientStateError("send_message() after quit()")
        self._tx = tx
        if self._state is not _S.READY:
            return []
        events = self._start()
        return events + self._pump()  # replies that came before the commands went out

    def receive(self, data: bytes) -> list[Event]:
        """Bytes from the peer; ``b""`` is the end of the connection."""
        if self._state is _S.CLOSED:
            return []
        if not data:
            return self.connection_lost()
        if self._state is _S.TLS_WAIT:
            return []  # clear text after the 220 to STARTTLS is never read (RFC 3207 5)
        self._in.feed(data)
        if self._state in (_S.BODY, _S.CHUNK) and self._in.buffered >= MAX_REPLY_LINE:
            return self._fatal("Z", self._malformed(), quit=False)  # RFC 5321 4.3.2: silence
        return self._pump(idle_reads=True)

    def _pump(self, *, idle_reads: bool = False) -> list[Event]:
        """Read the complete replies buffered, until the state reads no more.

        Idle, only ``receive`` reads (an unasked-for reply ends the session), and only until
        it emitted something."""
        events: list[Event] = []
        # SendBody, Ready and TransactionDone end a list: what comes after them is read after
        # body_sent(), send_message() or quit(), so the chunking never changes the dialog.
        while self._state not in (_S.CLOSED, _S.TLS_WAIT, _S.BODY, _S.CHUNK) and not (
            self._state is _S.READY and (events or not idle_reads)
        ):
            line = self._in.take_line(MAX_REPLY_LINE)
            if line is None:
                break
            try:
                reply = self._replies.add(line)
            except Malformed:
                events += self._fatal("Z", self._malformed(), quit=False)
                break
            if reply is not None:
                events += self._on_reply(reply)
        return events

    def tls_started(self) -> list[Event]:
        """The handshake succeeded: forget the clear-text session and say EHLO again."""
        if self._state is _S.CLOSED:
            return []  # the peer ended it first; the events said so
        if self._state is not _S.TLS_WAIT:
            raise ClientStateError(f"tls_started() in state {self._state.value}")
        self._tls_active = True
        self._extensions = {}
        self._in.clear()
        self._state = _S.EHLO_TLS
        return [Send(b"EHLO " + self._helo + b"\r\n")]

    def tls_failed(self, reason: str) -> list[Event]:
        """The handshake failed: nothing more can be said on this connection."""
        if self._state is _S.CLOSED:
            return []  # the peer ended it first; the events said so
        if self._state is not _S.TLS_WAIT:
            raise ClientStateError(f"tls_failed() in state {self._state.value}")
        return self._tls_fatal(f"TLS connect failed: {reason}", quit=False)

    def _tls_fatal(self, text: str, *, quit: bool = True) -> list[Event]:
        if self._tls_permanent:
            return self._fatal("D", f"{text} (#5.7.10)", quit=quit)
        return self._fatal("Z", text, quit=quit)

    def body_sent(self) -> list[Event]:
        """The driver wrote the whole encoded body and ``.CRLF``: wait for the final reply."""
        if self._state is _S.CLOSED:
            return []  # the peer ended it first; the events said so
        if self._state is not _S.BODY:
            raise ClientStateError(f"body_sent() in state {self._state.value}")
        self._state = _S.FINAL
        return self._pump()

    def body_failed(self, text: str, *, permanent: bool) -> list[Event]:
        """The body could not be sent whole (``PartialLineError``: permanent, its text; a
        queue read error: temporary).  No dot is sent, so the server drops the partial
        message: the connection is closed, as qmail-remote exits mid-DATA."""
        if self._state is _S.CLOSED:
            return []  # the peer ended it first; the events said so
        if self._state not in (_S.BODY, _S.CHUNK):
            raise ClientStateError(f"body_failed() in state {self._state.value}")
        return self._fatal("D" if permanent else "Z", text, quit=False)

    def chunk(self, data: bytes, *, last: bool) -> list[Event]:
        """After ``SendChunk``: the next piece of the body in wire form (``bdatsend.py``),
        sent as ``BDAT <n> [LAST]`` and the octets.  One chunk at a time, each waiting for
        its reply: RFC 3030 2 lets a client pipeline them with PIPELINING; we do not, so a
        refused chunk stops the body, and a reply per MiB costs little."""
        if self._state is _S.CLOSED:
            return []  # the peer ended it first; the events said so
        if self._state is not _S.CHUNK:
            raise ClientStateError(f"chunk() in state {self._state.value}")
        self._state = _S.FINAL if last else _S.BDAT
        return [Send(bdat_command(len(data), last) + data), *self._pump()]

    def quit(self) -> list[Event]:
        """End the session: ``QUIT`` when idle, then ``Closed`` on its answer or EOF."""
        if self._state in (_S.CLOSED, _S.QUIT):
            return []
        if self._tx is not None:
            raise ClientStateError("quit() during a transaction")
        if self._state is _S.READY:
            self._state = _S.QUIT
            return [Send(QUIT), *self._pump()]
        return self._close()  # mid-handshake: nothing worth saying

    def connection_lost(self) -> list[Event]:
        if self._state is _S.CLOSED:
            return []
        if self._state is _S.DISCARD and self._result is not None:
            return self._finish_known() + self._close()
        return self._fatal("Z", self._died(), quit=False)

    # -- replies ----------------------------------------------------------------------------

    def _on_reply(self, reply: Reply) -> list[Event]:
        handler = _HANDLERS.get(self._state)
        if handler is None:  # unreachable: receive() reads nothing in TLS_WAIT or CLOSED
            raise ClientStateError(f"a reply in state {self._state.value}")
        return handler(self, reply)

    def _greeting(self, reply: Reply) -> list[Event]:
        text = f"Connected to {self._peer} but greeting failed." + reply.said
        if reply.code == 220:
            self._state = _S.EHLO
            return [Send(b"EHLO " + self._helo + b"\r\n")]
        if 400 <= reply.code < 600:  # spec 17.4, zeitform: try the next MX
            self._failure = ("Z", text)
            return [Send(QUIT), SkipHost(text), *self._close()]
        return self._fatal("Z", text)

    def _ehlo(self, reply: Reply) -> list[Event]:
        if reply.code != 250:  # qmail-tls: anything but 250 -> HELO
            self._state = _S.HELO
            return [Send(b"HELO " + self._helo + b"\r\n")]
        self._extensions = parse_ehlo(reply.lines)
        return self._after_hello()

    def _helo_reply(self, reply: Reply) -> list[Event]:
        if reply.code != 250:  # accept-5xx patch: 5xx is permanent (spec 17.3)
            text = f"Connected to {self._peer} but my name was rejected." + reply.said
            return self._fatal(fail_letter(reply.code), text)
        self._extensions = {}
        return self._after_hello()

    def _after_hello(self) -> list[Event]:
        if not self._tls_active and self._tls_mode is not TlsMode.NONE:
            if "STARTTLS" in self._extensions:
                self._state = _S.STARTTLS
                return [Send(b"STARTTLS\r\n")]
            if self._tls_mode is TlsMode.REQUIRED:
                return self._tls_fatal(f"No TLS achieved while {self._tls_file} exists")
        return self._become_ready()

    def _starttls(self, reply: Reply) -> list[Event]:
        if reply.code == 220:
            self._in.clear()  # pipelined clear text must never be read (RFC 3207 5)
            self._state = _S.TLS_WAIT
            return [StartTls()]
        if self._tls_mode is TlsMode.REQUIRED:
            text = f"STARTTLS rejected while {self._tls_file} exists" + reply.said
            return self._tls_fatal(text)
        return self._become_ready()  # opportunistic: go on in clear text

    def _ehlo_tls(self, reply: Reply) -> list[Event]:
        if reply.code != 250:
            text = f"TLS connected to {self._peer} but my name was rejected." + reply.said
            return self._fatal("Z", text)  # qmail-tls's text
        self._extensions = parse_ehlo(reply.lines)
        return self._become_ready()

    def _become_ready(self) -> list[Event]:
        self._ready = True
        self._state = _S.READY
        events: list[Event] = [Ready(MappingProxyType(dict(self._extensions)))]
        return events + self._start() if self._tx is not None else events

    def _idle(self, reply: Reply) -> list[Event]:
        # Unasked for while idle: a 421 before the server hangs up (RFC 5321 3.8).
        return self._fatal("Z", self._died(), quit=False)

    def _quit_reply(self, reply: Reply) -> list[Event]:
        return self._close()

    # -- transactions -------------------------------------------------------------------------

    def _start(self) -> list[Event]:
        tx = self._tx
        assert tx is not None
        refusal = nexthop.refusal(tx, self._peer, self._tls_active, self._extensions)
        if refusal is not None:
            return self._finish("D", refusal)
        ext = self._extensions  # SIZE, BODY, REQUIRETLS, SMTPUTF8; DSN's when offered
        commands = [("RSET", b"RSET\r\n")] if self._dirty else []
        sender = wire_address(tx, tx.sender)
        commands.append(("MAIL", b"MAIL FROM:<%s>%s\r\n" % (sender, mail_params(tx, ext))))
        for i, r in enumerate(tx.recipients):
            rcpt = wire_address(tx, r)
            commands.append(("RCPT", b"RCPT TO:<%s>%s\r\n" % (rcpt, rcpt_params(tx, i, ext))))
        if not tx.binarymime:  # RFC 3030 3: BINARYMIME goes by BDAT only (SendChunk)
            commands.append(("DATA", b"DATA\r\n"))
        self._dirty = False
        self._state = _S.TX
        run = _Run(tx, "PIPELINING" in self._extensions, deque(commands))
        self._run = run
        if run.pipelined:  # RFC 2920 3.1: RSET, MAIL and RCPT may be grouped; DATA ends it
            run.awaiting.extend(kind for kind, _ in commands)
            run.to_send.clear()
            return [Send(b"".join(line for _, line in commands))]
        return self._send_next(run)

    def _send_next(self, run: _Run) -> list[Event]:
        kind, line = run.to_send.popleft()
        run.awaiting.append(kind)
        return [Send(line)]

    def _tx_reply(self, reply: Reply) -> list[Event]:
        run = self._run
        assert run is not None and run.awaiting
        kind = run.awaiting.popleft()
        if kind == "DATA":
            return self._data_reply(run, reply)
        if kind == "MAIL" and not reply.ok:
            text = f"Connected to {self._peer} but sender was rejected." + reply.said
            run.failure = (fail_letter(reply.code), text)
        elif kind == "RCPT" and run.failure is None:
            run.reports.append(self._rcpt_report(reply))
        if run.pipelined:
            return [] if run.awaiting else self._envelope_done(run)
        if run.failure is not None:
            return self._finish(*run.failure)
        if not run.to_send:  # BDAT: the last RCPT reply
            return self._envelope_done(run)
        if run.to_send[0][0] == "DATA" and not self._accepted(run):
            return self._finish(*self._giving_up(run))
        return self._send_next(run)

    def _rcpt_report(self, reply: Reply) -> RecipientReport:
        if reply.ok:
            return RecipientReport("r", "")
        letter = "h" if reply.code >= 500 else "s"
        return RecipientReport(letter, f"{self._peer} does not like recipient." + reply.said)

    @staticmethod
    def _accepted(run: _Run) -> bool:
        return any(r is not None and r.letter == "r" for r in run.reports)

    def _giving_up(self, run: _Run) -> tuple[str, str]:
        # qmail's text carries no remote reply: each refusal is in its recipient's report.
        all_soft = all(r is not None and r.letter == "s" for r in run.reports)
        return ("Z" if all_soft else "D", f"Giving up on {self._peer}.")

    def _data_reply(self, run: _Run, reply: Reply) -> list[Event]:
        if run.failure is None and not self._accepted(run):
            run.failure = self._giving_up(run)
        if run.failure is not None:
            if reply.code != 354:
                return self._finish(*run.failure)
            self._result = self._result_for(run.tx, *run.failure, run.reports)
            self._state = _S.DISCARD
            return [Send(b".\r\n")]  # end the empty message; its reply does not matter
        if reply.code == 354:
            self._state = _S.BODY
            return [SendBody()]
        return self._finish(
            fail_letter(reply.code), f"{self._peer} failed on DATA command." + reply.said
        )

    def _envelope_done(self, run: _Run) -> list[Event]:
        """A BDAT transaction has all its MAIL and RCPT replies: the body, or the failure."""
        if run.failure is None and not self._accepted(run):
            run.failure = self._giving_up(run)
        if run.failure is not None:
            return self._finish(*run.failure)
        self._state = _S.CHUNK
        return [SendChunk()]

    def _bdat_reply(self, reply: Reply) -> list[Event]:
        """RFC 3030 2: a 250 per chunk; after a refusal no more chunks (RSET comes next)."""
        if reply.ok:
            self._state = _S.CHUNK
            return [SendChunk()]
        text = f"{self._peer} failed on BDAT command." + reply.said
        return self._finish(fail_letter(reply.code), text)

    def _final_reply(self, reply: Reply) -> list[Event]:
        if reply.ok:  # with DSN offered, the DSN request went along (RFC 3461 5.2.3)
            text = f"{self._peer} accepted message." + reply.said
            return self._finish("K", text, dsn="DSN" in self._extensions)
        text = f"{self._peer} failed after I sent the message." + reply.said
        return self._finish(fail_letter(reply.code), text)

    def _discard_reply(self, reply: Reply) -> list[Event]:
        return self._finish_known()

    def _finish(self, letter: str, text: str, dsn: bool = False) -> list[Event]:
        assert self._tx is not None
        reports = self._run.reports if self._run is not None else []
        self._result = self._result_for(self._tx, letter, text, reports, dsn)
        return self._finish_known()

    def _finish_known(self) -> list[Event]:
        result, self._result = self._result, None
        assert result is not None
        self._dirty = result.letter != "K" and self._run is not None
        self._tx, self._run = None, None
        self._state = _S.READY
        return [TransactionDone(result)]

    @staticmethod
    def _result_for(
        tx: Transaction,
        letter: str,
        text: str,
        reports: list[RecipientReport | None] | None = None,
        dsn: bool = False,
    ) -> TransactionResult:
        known = list(reports or [])
        known += [None] * (len(tx.recipients) - len(known))
        full = tuple(r if r is not None else RecipientReport("r", "") for r in known)
        return TransactionResult(full, letter, text, dsn)

    # -- endings ------------------------------------------------------------------------------

    def _died(self) -> str:
        duplicate = "Possible duplicate! " if self._state is _S.FINAL else ""
        return f"Connected to {self._peer} but connection died. {duplicate}(#4.4.2)"

    def _malformed(self) -> str:
        duplicate = "Possible duplicate! " if self._state is _S.FINAL else ""
        return f"Connected to {self._peer} but it sent a malformed reply. {duplicate}(#4.4.2)"

    def _fatal(self, letter: str, text: str, *, quit: bool = True) -> list[Event]:
        """The session is over: say QUIT (unless the stream is unusable), report, close."""
        events: list[Event] = [Send(QUIT)] if quit else []
        # A later send_message gets the session's failure; once a transaction was told, the
        # next one only learns that the connection is gone (no duplicate, no partial line).
        died = f"Connected to {self._peer} but connection died. (#4.4.2)"
        self._failure = (letter, text) if self._tx is None else ("Z", died)
        if self._state is _S.DISCARD and self._result is not None:
            events += self._finish_known()  # decided before the dot: keep that result
        elif self._tx is not None:
            events += self._finish(letter, text)
        return events + self._close()

    def _close(self) -> list[Event]:
        self._state = _S.CLOSED
        self._in.clear()
        self._run, self._tx = None, None
        self._replies.clear()
        return [Closed()]


_HANDLERS = {
    _S.GREETING: ClientEngine._greeting,
    _S.EHLO: ClientEngine._ehlo,
    _S.HELO: ClientEngine._helo_reply,
    _S.STARTTLS: ClientEngine._starttls,
    _S.EHLO_TLS: ClientEngine._ehlo_tls,
    _S.READY: ClientEngine._idle,
    _S.TX: ClientEngine._tx_reply,
    _S.FINAL: ClientEngine._final_reply,
    _S.BDAT: ClientEngine._bdat_reply,
    _S.DISCARD: ClientEngine._discard_reply,
    _S.QUIT: ClientEngine._quit_reply,
}
"""What a complete reply means in each state that reads replies."""
