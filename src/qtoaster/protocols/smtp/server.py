"""ServerConnection: the sans-IO SMTP server engine (bytes in, events out; replies in, bytes out).

The driver feeds socket bytes with :meth:`ServerConnection.receive_data`, pulls events with
:meth:`~ServerConnection.next_event` until :data:`NEED_DATA`, answers each event that expects
it with :meth:`~ServerConnection.send`, and writes :meth:`~ServerConnection.data_to_send`.

Behaviour (spec 3.1-3.6, RFC 5321, RFC 2920):

- Lines end at LF, one trailing CR is stripped (qmail).  Pipelined commands are taken one at
  a time, in order; replies accumulate until the driver takes them.  After a 354 the bytes are
  message data (never commands) until ``CRLF.CRLF``; what follows is commands again.
- BDAT (RFC 3030 CHUNKING, protocols/smtp/chunking.py): exactly the announced octets follow
  the command line, in the same read or not; they are message content (every line end as
  LF), never commands; what follows them is commands again.  The first BDAT of a transaction
  is a :class:`~events.Bdat` event, answered like Data; each chunk but the last is answered
  ``250 <n> octets received`` by the engine; ``LAST`` ends in DataEnd.  A BDAT out of
  sequence (503) or refused by the driver has its octets read and dropped before the reply.
  A BDAT without a valid size gets 501 and closes (its octets cannot be told from commands).
  Between chunks only BDAT, RSET, NOOP, VRFY, HELP and QUIT are taken (DATA: 503, RFC 3030
  2); DATA after ``MAIL ... BODY=BINARYMIME`` is 503 (RFC 3030 3).
- The engine answers by itself, without an event: unknown verbs (502), HELO/EHLO without a
  name (501, RFC 5321 4.1.1.1; qmail accepted it), unparsable paths (555), CR or NUL in a
  MAIL/RCPT address or parameter (501 ``bad address syntax``, #5.1.7 / #5.1.3: it would
  end a header line in Return-Path; qmail let it through), RCPT/DATA out of
  sequence (503), a RCPT over ``max_recipients`` (452), a line over ``max_line`` bytes
  including CRLF (500; the rest of that line is discarded), a bare LF in DATA (451, closed),
  STARTTLS with a parameter (501) or once in TLS (502, qmail-tls, spec 7.2).
- AUTH (RFC 4954): a 334 answer to Auth/AuthLine makes the next line an AuthLine (limit
  ``max_auth_line``, CRLF included; over it: 500 and the exchange is over); any other answer
  returns to commands.  334 replies are never prefixed with an enhanced code (the text is
  the base64 challenge).
- STARTTLS (RFC 3207): a 2xx answer to StartTls drops all buffered input and suspends the
  engine (TLS_PENDING: input is held, no events) until :meth:`ServerConnection.start_tls_done`;
  :meth:`ServerConnection.discard_input` drops what arrived in clear text meanwhile.  See
  docs/protocols.md for the exact driver contract (STARTTLS command injection, CVE-2011-0411).
- Limits: the ``max_errors``+1-th engine-detected error and the ``max_commands``+1-th command
  line get 421 and close.  Refusals the driver sends are not errors: qmail's policy refusals
  never drop the connection (spec 4).
- After QUIT, input is ignored.  Any 421, solicited or not, closes (RFC 5321 3.8).
- EOF: once all complete commands are taken, :class:`~events.ConnectionClosed` is returned
  once, the engine is closed, and every later call returns :data:`NEED_DATA`.  A partial
  command line at EOF is dropped silently (qmail exits on EOF).

Invariants: no I/O imports; after ``next_event`` returns NEED_DATA the input buffer holds less
than ``max_line`` bytes (``max_auth_line`` in AUTH; unbounded only in TLS_PENDING, which the
driver ends; nothing inside a BDAT chunk, whatever its size: its octets are never held
whole); no byte buffered when a StartTls is answered 2xx ever becomes an event; an
event expecting a reply must be answered before the next ``next_event`` (else
:class:`SmtpProtocolError`); replies leave in the order of the commands.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Final

from qtoaster.core.address import AddressSyntaxError, breaks_envelope, parse_mail_argument
from qtoaster.core.reply import (
    BAD_RCPT_SYNTAX,
    BAD_SENDER_SYNTAX,
    BARE_LF,
    LINE_TOO_LONG,
    SYNTAX_ERROR,
    TOO_MANY_COMMANDS,
    TOO_MANY_ERRORS,
    TOO_MANY_RCPTS,
    UNIMPLEMENTED,
    Reply,
)
from qtoaster.protocols.linereader import TOO_LONG, LineReader
from qtoaster.protocols.smtp import events as ev
from qtoaster.protocols.smtp.chunking import (
    BDAT_EXPECTED,
    BDAT_SYNTAX,
    BINARYMIME_NEEDS_BDAT,
    DATA_AFTER_BDAT,
    ChunkReader,
    octets_received,
    parse_bdat,
)
from qtoaster.protocols.smtp.commands import (
    parse_auth_argument,
    parse_auth_line,
    parse_command_line,
    parse_parameters,
)
from qtoaster.protocols.smtp.dataframe import BareLineFeed, DataFramer
from qtoaster.protocols.smtp.states import (
    SEQUENCE_ERRORS,
    SmtpProtocolError,
    State,
    next_state,
)

__all__ = [
    "NEED_DATA",
    "NEED_HOSTNAME",
    "NeedData",
    "ServerConnection",
    "SmtpProtocolError",
    "State",
]

NEED_HOSTNAME = Reply(501, "syntax error, HELO/EHLO needs a host name (#5.5.4)")
"""RFC 5321 4.1.1.1 requires the domain; qmail 1.03 accepted an empty one."""

STARTTLS_NO_PARAMS = Reply(501, "Syntax error (no parameters allowed) (#5.5.4)")
"""qmail-tls's answer to STARTTLS with an argument (spec 7.2; RFC 3207 4 has no parameters)."""

MAX_AUTH_LINE = 12288
"""RFC 4954 4 calls 12288 octets a sufficient line length for deployed SASL mechanisms."""


class NeedData(enum.Enum):
    """The type of :data:`NEED_DATA` (an enum member, so ``is`` checks narrow types)."""

    NEED_DATA = "NEED_DATA"


class _Again(enum.Enum):
    AGAIN = "AGAIN"  # internal: the engine answered by itself, look again


NEED_DATA: Final = NeedData.NEED_DATA
_AGAIN: Final = _Again.AGAIN


class ServerConnection:
    def __init__(
        self,
        *,
        max_line: int = 4096,
        max_errors: int = 20,
        max_commands: int = 10_000,
        max_recipients: int = 1000,
        max_auth_line: int = MAX_AUTH_LINE,
        enhanced_status_codes: bool = False,
        tls: bool = False,
    ) -> None:
        if min(max_errors, max_commands, max_recipients) < 1 or min(max_line, max_auth_line) < 8:
            raise ValueError("limits must be positive (line limits at least 8)")
        self._max_line = max_line
        self._max_auth_line = max_auth_line
        self._tls = tls  # encrypted from the start (SMTPS, spec 7.4) or after STARTTLS
        self._max_errors = max_errors
        self._max_commands = max_commands
        self._max_recipients = max_recipients
        self._state = State.COMMAND
        self._in = LineReader()
        self._out: list[bytes] = []
        self._pending: ev.Event | None = None
        self._framer: DataFramer | None = None
        self._data_end: ev.DataEnd | None = None  # waits until the last DataChunk is out
        self._chunk: ChunkReader | None = None  # the BDAT message being received
        self._skip = 0  # octets of a refused BDAT chunk still to drop
        self._skip_reply: bytes | None = None  # the reply to send once they are dropped
        self._binarymime = False  # the open transaction's MAIL had BODY=BINARYMIME
        self._ignore_input = False  # QUIT seen
        self._errors = 0
        self._nul_cut = False  # the current command line had a NUL (and was cut there)
        self._commands = 0
        self._recipients = 0
        self.helo: str | None = None
        self.closed = False
        # RFC 2034: once a client's EHLO was answered 2xx (and we advertise the
        # extension), every reply but those to HELO/EHLO carries the code as a prefix.
        self._offer_enhanced = enhanced_status_codes
        self._enhanced = False

    @property
    def state(self) -> State:
        return self._state

    @property
    def enhanced(self) -> bool:
        """Whether replies now carry RFC 2034 enhanced status codes as a prefix."""
        return self._enhanced

    @property
    def tls(self) -> bool:
        """Whether the session is encrypted: ``tls=True`` given, or after start_tls_done()."""
        return self._tls

    @property
    def helo_seen(self) -> bool:
        """An HELO/EHLO was answered 2xx (since the STARTTLS handshake, if there was one)."""
        return self.helo is not None

    @property
    def buffered(self) -> int:
        """Input bytes received but not yet turned into events."""
        return self._in.buffered

    # -- input ----------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes from the client; ``b""`` means EOF.  Ignored once closed or after QUIT."""
        if self.closed or self._ignore_input or self._in.eof:
            return
        self._in.feed(data)

    def next_event(self) -> ev.Event | NeedData:
        """The next event, or NEED_DATA when more input is needed (or the engine is closed)."""
        if self._pending is not None:
            raise SmtpProtocolError(f"{self._pending!r} has not been answered")
        while not self.closed:
            if self._skip_reply is not None:
                event = self._skip_event()
            elif self._state is State.DATA:
                event = self._data_event()
            elif self._state is State.CHUNK:
                event = self._chunk_event()
            elif self._state is State.AUTH:
                event = self._auth_line_event()
            elif self._state is State.TLS_PENDING:
                # Nothing is parsed until the driver says the handshake is done.
                return self._connection_closed() if self._in.eof else NEED_DATA
            else:
                event = self._command_event()
            if event is not _AGAIN:
                return event
        return NEED_DATA

    # -- output ---------------------------------------------------------------------------

    def send(self, reply: Reply) -> None:
        """Answer the pending event, or (none pending) send an unsolicited reply.

        Unsolicited replies are the greeting, a timeout or a shutdown notice; a 421 closes.
        """
        event = self._pending
        if self.closed:
            raise SmtpProtocolError("the connection is closed")
        if event is None:
            self._out.append(self._render(reply))
            if reply.code == 421:
                self._close()
            return
        target = next_state(self._state, type(event), reply.code)
        self._pending = None
        if isinstance(event, ev.Helo):
            self._out.append(reply.render())  # RFC 2034: never prefixed
            if 200 <= reply.code < 300:
                self._enhanced = self._offer_enhanced and event.extended
        elif reply.code == 334:
            self._out.append(reply.render())  # RFC 4954 4: the text is the base64 challenge
        elif isinstance(event, ev.Bdat) and reply.code != 421:
            # RFC 3030 2: the reply follows the chunk's octets; a 354 (accepted) is not sent.
            if reply.code >= 400:
                self._skip_octets(event.size, self._render(reply))
        else:
            self._out.append(self._render(reply))
        self._enter(target, event, 200 <= reply.code < 300)

    def _render(self, reply: Reply) -> bytes:
        return reply.render(self._enhanced)

    def data_to_send(self) -> bytes:
        """All replies queued so far; empties the queue."""
        out, self._out = b"".join(self._out), []
        return out

    # -- STARTTLS -------------------------------------------------------------------------

    def discard_input(self) -> None:
        """Drop every byte received and not yet turned into an event, partial line included.

        Against STARTTLS command injection (RFC 3207 5, CVE-2011-0411): ``send`` of a 2xx to
        StartTls calls it, and the driver calls it again right before the socket is handed
        to TLS (no await in between), so clear text that arrived after the 220 is dropped too.
        """
        self._in.clear()

    def start_tls_done(self) -> None:
        """The TLS handshake after a 2xx to StartTls succeeded: back to commands, no HELO.

        RFC 3207 4.2: the server discards what it learnt from the client; here the HELO name
        (qmail resets it to TCPREMOTEHOST, spec 7.2), any transaction, and enhanced status
        codes until the next EHLO.  Input held since the last ``discard_input`` is kept: it
        came through TLS (asyncio may deliver it before its start_tls() returns).
        """
        if self._state is not State.TLS_PENDING:
            raise SmtpProtocolError(f"start_tls_done() in state {self._state}")
        self._tls = True
        self.helo = None
        self._enhanced = False
        self._recipients = 0
        self._state = State.COMMAND

    # -- commands -------------------------------------------------------------------------

    def _command_event(self) -> ev.Event | NeedData | _Again:
        line = self._in.take_line(self._max_line)
        if line is None:
            return self._connection_closed() if self._in.eof else NEED_DATA
        self._commands += 1
        if self._commands > self._max_commands:
            return self._fatal(TOO_MANY_COMMANDS)
        if line is TOO_LONG:
            return self._error(LINE_TOO_LONG)
        command = parse_command_line(line)
        self._nul_cut = b"\0" in line
        handler = _HANDLERS.get(command.verb)
        if handler is None:
            return self._error(UNIMPLEMENTED)
        if self._state is State.BDAT and command.verb not in _BETWEEN_CHUNKS:
            return self._error(DATA_AFTER_BDAT if command.verb == "DATA" else BDAT_EXPECTED)
        return handler(self, command.argument)

    def _helo(self, argument: str, extended: bool) -> ev.Event | NeedData | _Again:
        if not argument:
            return self._error(NEED_HOSTNAME)
        return self._emit(ev.Helo(argument, extended))

    def _mail(self, argument: str) -> ev.Event | NeedData | _Again:
        try:
            address, words = parse_mail_argument(argument)
        except AddressSyntaxError:
            return self._error(SYNTAX_ERROR)
        if self._breaks_envelope(address, words):
            return self._error(BAD_SENDER_SYNTAX)
        parsed = parse_parameters(words)
        return self._emit(ev.MailFrom(address, parsed.params, parsed.size, parsed.body))

    def _rcpt(self, argument: str) -> ev.Event | NeedData | _Again:
        sequence_error = SEQUENCE_ERRORS.get((self._state, ev.RcptTo))
        if sequence_error is not None:
            return self._error(sequence_error)
        try:
            address, words = parse_mail_argument(argument)
        except AddressSyntaxError:
            return self._error(SYNTAX_ERROR)
        if self._breaks_envelope(address, words):
            return self._error(BAD_RCPT_SYNTAX)
        if self._recipients >= self._max_recipients:
            # RFC 5321 4.5.3.1.8: 452 and the client goes on with the ones accepted.
            self._out.append(self._render(TOO_MANY_RCPTS))
            return _AGAIN
        return self._emit(ev.RcptTo(address, parse_parameters(words).params))

    def _breaks_envelope(self, address: str, words: list[str]) -> bool:
        """CR or NUL in the address or a parameter (LF cannot reach here: it ends the line).

        A NUL cut the line (qmail's C string); taking what came before it would accept an
        address the client did not send, so it is refused like a CR.
        """
        return self._nul_cut or breaks_envelope(address) or any(map(breaks_envelope, words))

    def _data(self, argument: str) -> ev.Event | NeedData | _Again:
        sequence_error = SEQUENCE_ERRORS.get((self._state, ev.Data))
        if sequence_error is not None:
            return self._error(sequence_error)
        if self._binarymime:
            return self._error(BINARYMIME_NEEDS_BDAT)
        return self._emit(ev.Data())

    def _bdat(self, argument: str) -> ev.Event | NeedData | _Again:
        command = parse_bdat(argument)
        if command is None:
            return self._fatal(BDAT_SYNTAX)
        if self._state is State.BDAT:  # the next chunk of the message (no event)
            assert self._chunk is not None
            self._chunk.next_chunk(command.size, command.last)
            self._state = State.CHUNK
            return _AGAIN
        sequence_error = SEQUENCE_ERRORS.get((self._state, ev.Bdat))
        if sequence_error is not None:
            # RFC 3030 2: the octets are read anyway, so the stream stays in step.
            self._errors += 1
            if self._errors > self._max_errors:
                return self._fatal(TOO_MANY_ERRORS)
            self._skip_octets(command.size, self._render(sequence_error))
            return _AGAIN
        return self._emit(ev.Bdat(command.size, command.last))

    def _auth(self, argument: str) -> ev.Event | NeedData | _Again:
        # Preconditions (auth available, not yet authenticated, no transaction) and the
        # mechanism are the driver's: qmail checks them in that order (spec 6.2).
        mechanism, initial_response = parse_auth_argument(argument)
        return self._emit(ev.Auth(mechanism, initial_response))

    def _starttls(self, argument: str) -> ev.Event | NeedData | _Again:
        if self._tls:
            return self._error(UNIMPLEMENTED)  # qmail-tls checks this first (spec 7.2)
        if argument:
            return self._error(STARTTLS_NO_PARAMS)
        return self._emit(ev.StartTls())

    def _quit(self, argument: str) -> ev.Event | NeedData | _Again:
        # Anything pipelined after QUIT is never looked at.
        self._ignore_input = True
        self._in.clear()
        return self._emit(ev.Quit())

    # -- AUTH exchange --------------------------------------------------------------------

    def _auth_line_event(self) -> ev.Event | NeedData | _Again:
        line = self._in.take_line(self._max_auth_line)
        if line is None:
            return self._connection_closed() if self._in.eof else NEED_DATA
        self._commands += 1
        if self._commands > self._max_commands:
            return self._fatal(TOO_MANY_COMMANDS)
        if line is TOO_LONG:
            self._state = State.COMMAND  # the 500 ends the exchange
            return self._error(LINE_TOO_LONG)
        return self._emit(ev.AuthLine(parse_auth_line(line)))

    # -- DATA -----------------------------------------------------------------------------

    def _data_event(self) -> ev.Event | NeedData | _Again:
        if self._data_end is not None:
            end, self._data_end = self._data_end, None
            return self._emit(end)
        if not self._in.buffered:
            return self._connection_closed() if self._in.eof else NEED_DATA
        assert self._framer is not None
        chunk = self._in.take_all()
        try:
            framed = self._framer.feed(chunk)
        except BareLineFeed:
            self._out.append(self._render(BARE_LF))
            self._close()
            return ev.DataAborted(BARE_LF)
        if framed.end is not None:
            self._in.put_back(chunk[framed.end :])  # pipelined commands after the final dot
            self._data_end = ev.DataEnd(self._framer.hops)
        if framed.payload:
            return ev.DataChunk(framed.payload)
        return _AGAIN

    # -- BDAT chunks (RFC 3030) ------------------------------------------------------------

    def _chunk_event(self) -> ev.Event | NeedData | _Again:
        if self._data_end is not None:
            end, self._data_end = self._data_end, None
            return self._emit(end)
        reader = self._chunk
        assert reader is not None
        payload = b""
        if reader.remaining:
            if not self._in.buffered:
                return self._connection_closed() if self._in.eof else NEED_DATA
            payload = reader.feed(self._in.take(reader.remaining))
        if not reader.remaining:
            if reader.last:
                payload += reader.finish()
                self._data_end = ev.DataEnd(reader.hops)
            else:
                self._out.append(self._render(octets_received(reader.size)))
                self._state = State.BDAT
        return ev.DataChunk(payload) if payload else _AGAIN

    def _skip_octets(self, size: int, rendered: bytes) -> None:
        self._skip, self._skip_reply = size, rendered

    def _skip_event(self) -> ev.Event | NeedData | _Again:
        if self._skip:
            if not self._in.buffered:
                return self._connection_closed() if self._in.eof else NEED_DATA
            self._skip -= len(self._in.take(self._skip))
            return _AGAIN
        assert self._skip_reply is not None
        self._out.append(self._skip_reply)
        self._skip_reply = None
        return _AGAIN

    # -- bookkeeping ----------------------------------------------------------------------

    def _emit(self, event: ev.Event) -> ev.Event:
        self._pending = event
        return event

    def _enter(self, target: State, event: ev.Event, positive: bool) -> None:
        if target is State.CLOSED:
            self._close()
            return
        if positive and isinstance(event, ev.Helo):
            self.helo = event.name
        if positive and isinstance(event, ev.RcptTo):
            self._recipients += 1
        elif target is State.COMMAND or (positive and isinstance(event, ev.MailFrom)):
            self._recipients = 0  # transaction over, or a new one (a second MAIL, qmail)
        if target is State.COMMAND:
            self._binarymime = False
        elif positive and isinstance(event, ev.MailFrom):
            self._binarymime = event.body == "BINARYMIME"
        self._framer = DataFramer() if target is State.DATA else None
        if isinstance(event, ev.Bdat) and target is State.CHUNK:
            self._chunk = ChunkReader(event.size, event.last)
        elif target not in (State.CHUNK, State.BDAT):
            self._chunk = None
        self._state = target
        if target is State.TLS_PENDING:
            self.discard_input()  # pipelined clear text must never become a command

    def _error(self, reply: Reply) -> _Again:
        self._errors += 1
        if self._errors > self._max_errors:
            return self._fatal(TOO_MANY_ERRORS)
        self._out.append(self._render(reply))
        return _AGAIN

    def _fatal(self, reply: Reply) -> _Again:
        self._out.append(self._render(reply))
        self._close()
        return _AGAIN

    def _connection_closed(self) -> ev.Event:
        self._close()
        return ev.ConnectionClosed()

    def _close(self) -> None:
        self.closed = True
        self._state = State.CLOSED
        self._in.clear()
        self._framer = None
        self._data_end = None
        self._chunk = None
        self._skip, self._skip_reply = 0, None


_Handler = Callable[[ServerConnection, str], "ev.Event | NeedData | _Again"]

_HANDLERS: dict[str, _Handler] = {
    "HELO": lambda conn, arg: conn._helo(arg, extended=False),
    "EHLO": lambda conn, arg: conn._helo(arg, extended=True),
    "MAIL": ServerConnection._mail,
    "RCPT": ServerConnection._rcpt,
    "DATA": ServerConnection._data,
    "RSET": lambda conn, arg: conn._emit(ev.Rset()),
    "NOOP": lambda conn, arg: conn._emit(ev.Noop()),
    "VRFY": lambda conn, arg: conn._emit(ev.Vrfy(arg)),
    "HELP": lambda conn, arg: conn._emit(ev.Help()),
    "QUIT": ServerConnection._quit,
    "AUTH": ServerConnection._auth,
    "STARTTLS": ServerConnection._starttls,
    "BDAT": ServerConnection._bdat,
}
"""RFC 5321 4.1.1 verbs, AUTH, STARTTLS and BDAT; anything else gets 502 (qmail's table)."""

_BETWEEN_CHUNKS = frozenset(("BDAT", "RSET", "NOOP", "VRFY", "HELP", "QUIT"))
"""The verbs taken in state BDAT (states.py); the others get 503 there."""
