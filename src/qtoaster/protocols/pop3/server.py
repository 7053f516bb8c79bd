"""Pop3Connection: the sans-IO POP3 server engine (bytes in, events out; answers in, bytes out).

The driver sends the greeting (``ok("<pid.time@host>")``), feeds socket bytes with
:meth:`Pop3Connection.receive_data`, pulls events with :meth:`~Pop3Connection.next_event`
until :data:`NEED_DATA`, answers each event (``ok``, ``err``, ``challenge``, ``logged_in``,
or ``send_multiline_start``/``_chunk``/``_end``) and writes :meth:`~Pop3Connection.data_to_send`.

Behaviour (spec 19.2-19.5, RFC 1939, RFC 2449, RFC 2595, RFC 5034):

- Lines end at LF, one trailing CR is stripped (qmail-popup's commands.c accepts bare LF).
  Pipelined commands (RFC 2449 6.6) are taken one at a time, in order.
- The engine answers by itself what qmail answers without looking at the mailbox: in
  AUTHORIZATION ``NOOP`` (``+OK ``), ``USER``/``PASS`` without argument and ``APOP`` without
  a space (``-ERR syntax error``), ``PASS`` before an accepted ``USER`` (``-ERR USER first``),
  any other command (``-ERR authorization first``); in TRANSACTION commands qmail-pop3d
  lacks, AUTH/USER/STLS included (``-ERR unimplemented``), and message numbers that are not
  numbers (``-ERR syntax error``) or 0 (``-ERR messages are counted from 1``).  Existence and
  deletion of a message are the driver's (the mailbox gives qmail's texts).
- Login: a successful Pass, Apop, Auth or AuthLine is answered with :meth:`logged_in`
  (``+OK `` then TRANSACTION); failures with ``err`` (qmail closes after ``-ERR
  authorization failed``: call :meth:`close_after_send` first).
- AUTH (RFC 5034): a ``challenge`` answer makes the next line an AuthLine (limit
  ``max_auth_line``, LF included; over it ``-ERR line too long`` ends the exchange).
- STLS (RFC 2595): a +OK drops all buffered input and suspends the engine (TLS_PENDING)
  until :meth:`start_tls_done`; the driver calls :meth:`discard_input` again right before
  the TLS handshake (contract in docs/protocols.md, as for SMTP STARTTLS).
- Limits: a line over ``max_line`` bytes (LF included) gets ``-ERR line too long`` (the rest
  of it is discarded); the ``max_errors``+1-th engine error gets ``-ERR too many errors,
  closing connection`` and closes.  Timeouts are the driver's (qmail exits silently).
- After QUIT, input is ignored and any answer closes.  EOF: once the complete lines are
  taken, :class:`~events.ConnectionClosed` is returned once and the engine is closed.

Invariants: no I/O imports; after ``next_event`` returns NEED_DATA the input buffer holds
less than ``max_line`` bytes (``max_auth_line`` in AUTH_EXCHANGE; unbounded only in
TLS_PENDING, which the driver ends); no byte buffered when Stls is answered +OK ever becomes
an event; an event must be answered (a multiline answer ended) before the next
``next_event``; every reply line ends in CRLF and holds no other CR or LF.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from typing import Final

from qtoaster.protocols.linereader import TOO_LONG, LineReader
from qtoaster.protocols.pop3 import events as ev
from qtoaster.protocols.pop3.commands import (
    SYNTAX_ERROR,
    parse_command_line,
    parse_message_number,
    parse_top,
    split_apop,
)
from qtoaster.protocols.pop3.multiline import MultilineEncoder, frame_whole
from qtoaster.protocols.pop3.states import Answer, Pop3ProtocolError, State, next_state
from qtoaster.protocols.smtp.commands import parse_auth_argument, parse_auth_line

__all__ = [
    "NEED_DATA",
    "NeedData",
    "Pop3Connection",
    "Pop3ProtocolError",
    "State",
]

# The engine's own -ERR texts (qmail-popup.c / qmail-pop3d.c, spec 19.2 and 19.5).
USER_FIRST = "USER first"
AUTHORIZATION_FIRST = "authorization first"
UNIMPLEMENTED = "unimplemented"
LINE_TOO_LONG = "line too long"
TOO_MANY_ERRORS = "too many errors, closing connection"
TLS_ACTIVE = "Command not permitted when TLS active"  # RFC 2595 4's example text

# Texts the driver sends (spec 19.2, 19.5), kept here so both sides spell them alike.
AUTHORIZATION_FAILED = "authorization failed"
CAPABILITY_FIRST_LINE = "Capability list follows"
NOT_THAT_MANY = "not that many messages"
ALREADY_DELETED = "already deleted"
UNABLE_TO_OPEN = "unable to open that message"
UNABLE_TO_UNLINK = "unable to unlink all deleted messages"
NO_MAILDIR = "this user has no $HOME/Maildir"
UNABLE_TO_SCAN = "unable to scan $HOME/Maildir"

MAX_AUTH_LINE = 12288
"""As for SMTP AUTH (RFC 4954 4); RFC 5034 4 lifts RFC 2449's 255-octet limit for AUTH."""


class NeedData(enum.Enum):
    """The type of :data:`NEED_DATA` (an enum member, so ``is`` checks narrow types)."""

    NEED_DATA = "NEED_DATA"


class _Again(enum.Enum):
    AGAIN = "AGAIN"  # internal: the engine answered by itself, look again


NEED_DATA: Final = NeedData.NEED_DATA
_AGAIN: Final = _Again.AGAIN
_Result = ev.Event | NeedData | _Again


class Pop3Connection:
    def __init__(
        self,
        *,
        max_line: int = 1024,
        max_auth_line: int = MAX_AUTH_LINE,
        max_errors: int = 20,
        tls: bool = False,
    ) -> None:
        if max_errors < 1 or min(max_line, max_auth_line) < 8:
            raise ValueError("limits must be positive (line limits at least 8)")
        self._max_line = max_line
        self._max_auth_line = max_auth_line
        self._max_errors = max_errors
        self._tls = tls  # POP3S from the start, or after STLS
        self._state = State.AUTHORIZATION
        self._in = LineReader()
        self._out: list[bytes] = []
        self._pending: ev.Event | None = None
        self._encoder: MultilineEncoder | None = None  # a multiline answer is being streamed
        self._ignore_input = False  # QUIT seen
        self._errors = 0
        self._user: str | None = None
        self._login_confirmed = False  # logged_in() called with the login event pending
        self._login_unconfirmed = False  # +OK sent to a login, logged_in() still due
        self._close_after = False
        self.closed = False

    @property
    def state(self) -> State:
        return self._state

    @property
    def tls(self) -> bool:
        """Whether the session is encrypted: ``tls=True`` given, or after start_tls_done()."""
        return self._tls

    @property
    def user(self) -> str | None:
        """The name of the last USER answered +OK (what a Pass is for); None if none."""
        return self._user

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
            raise Pop3ProtocolError(f"{self._pending!r} has not been answered")
        if self._encoder is not None:
            raise Pop3ProtocolError("the multiline answer has not been ended")
        if self._login_unconfirmed:
            raise Pop3ProtocolError("a login was answered +OK: call logged_in()")
        while not self.closed:
            if self._state is State.TLS_PENDING:
                return self._connection_closed() if self._in.eof else NEED_DATA
            if self._state is State.AUTH_EXCHANGE:
                event = self._auth_line_event()
            else:
                event = self._command_event()
            if event is not _AGAIN:
                return event
        return NEED_DATA

    # -- answers --------------------------------------------------------------------------

    def ok(self, text: str = "") -> None:
        """``+OK text`` (``+OK `` with its space when there is no text, as qmail sends).

        With no event pending it is unsolicited: the greeting.
        """
        self._answer(Answer.OK, "+OK " + text)

    def err(self, text: str, code: str | None = None) -> None:
        """``-ERR text``, or ``-ERR [CODE] text`` with an RFC 2449 8 / RFC 3206 response code
        (``IN-USE``, ``LOGIN-DELAY``, ``SYS/TEMP``, ``SYS/PERM``, ``AUTH``)."""
        if code is not None and (not code or any(c in code for c in " []\r\n")):
            raise Pop3ProtocolError(f"bad response code {code!r}")
        self._answer(Answer.ERR, "-ERR " + (f"[{code}] " if code else "") + text)

    def challenge(self, text: str) -> None:
        """``+ text`` (RFC 5034 4: base64): the next client line is an AuthLine."""
        self._answer(Answer.CHALLENGE, "+ " + text)

    def logged_in(self, text: str = "") -> None:
        """Authentication succeeded and the maildrop is ready: TRANSACTION (RFC 1939 4).

        With a login event (Pass, Apop, Auth, AuthLine) pending, this answers it ``+OK text``
        (qmail-pop3d prints ``+OK `` once it has scanned the maildir, spec 19.2).  Called
        right after ``ok()`` answered the login event, it only changes the state.
        """
        if self._login_unconfirmed:
            self._login_unconfirmed = False
            self._state = State.TRANSACTION
            return
        if not isinstance(self._pending, ev.LOGIN_EVENTS):
            raise Pop3ProtocolError(f"logged_in() without a login to answer ({self._pending!r})")
        self._login_confirmed = True
        self.ok(text)

    def send_multiline_start(self, first: str = "") -> None:
        """``+OK first``, the first line of a multiline answer (RFC 1939 3)."""
        self._answer(Answer.MULTILINE, "+OK " + first)
        self._encoder = MultilineEncoder()

    def send_multiline_chunk(self, data: bytes) -> None:
        """Message bytes, cut anywhere: LF -> CRLF (CRLF kept), dot-stuffed (RFC 1939 3)."""
        if self._encoder is None:
            raise Pop3ProtocolError("send_multiline_chunk() outside a multiline answer")
        out = self._encoder.encode(data)
        if out:
            self._out.append(out)

    def send_multiline_end(self) -> None:
        """The last line end if the data lacked one, then the terminating ``.CRLF``."""
        if self._encoder is None:
            raise Pop3ProtocolError("send_multiline_end() outside a multiline answer")
        self._out.append(self._encoder.end())
        self._encoder = None
        if self._close_after:
            self._close()

    def send_message(self, data: bytes, first: str = "") -> None:
        """A whole multiline answer at once: ``+OK first``, ``data`` framed, the end.

        The same bytes as send_multiline_start(first), send_multiline_chunk(data) and
        send_multiline_end(), for a message read whole (RETR's usual case)."""
        self._answer(Answer.MULTILINE, "+OK " + first)
        body, end = frame_whole(data)
        self._out += (body, end)
        if self._close_after:
            self._close()

    def multiline(self, first: str, lines: Iterable[str | bytes]) -> None:
        """A whole multiline answer of short lines (CAPA, LIST, UIDL), each without CRLF."""
        self.send_multiline_start(first)
        # One chunk for all the lines: the framing does not depend on the chunking, and a
        # LIST of thousands of messages is then framed in two C passes, not per line.
        raw = [
            ln if isinstance(ln, bytes) else ln.encode("utf-8", "surrogateescape") for ln in lines
        ]
        if raw:
            raw.append(b"")
            self.send_multiline_chunk(b"\n".join(raw))
        self.send_multiline_end()

    def data_to_send(self) -> bytes:
        """All replies queued so far; empties the queue."""
        out, self._out = b"".join(self._out), []
        return out

    def close_after_send(self) -> None:
        """The next reply (a multiline one once ended) is the last: then the engine closes.

        qmail-popup exits after ``-ERR authorization failed`` (spec 19.2).
        """
        self._close_after = True

    def close(self) -> None:
        """Close now, sending nothing more (e.g. the driver's idle timeout, spec 19.1)."""
        self._close()

    # -- STLS -----------------------------------------------------------------------------

    def discard_input(self) -> None:
        """Drop every byte received and not yet turned into an event, partial line included.

        Against STLS command injection (RFC 2595 4, CVE-2011-0411 class): ``+OK`` to Stls
        calls it, and the driver calls it again right before the TLS handshake.
        """
        self._in.clear()

    def start_tls_done(self) -> None:
        """The TLS handshake after +OK to Stls succeeded: AUTHORIZATION again, USER forgotten.

        RFC 2595 4: the server discards what it learnt from the client.  Input held since
        the last ``discard_input`` is kept: it came through TLS.
        """
        if self._state is not State.TLS_PENDING:
            raise Pop3ProtocolError(f"start_tls_done() in state {self._state}")
        self._tls = True
        self._user = None
        self._state = State.AUTHORIZATION

    # -- answering ------------------------------------------------------------------------

    def _answer(self, kind: Answer, line: str) -> None:
        if self.closed:
            raise Pop3ProtocolError("the connection is closed")
        if self._encoder is not None:
            raise Pop3ProtocolError("a multiline answer is being sent")
        if "\r" in line or "\n" in line:
            raise Pop3ProtocolError(f"a reply line holds CR or LF: {line!r}")
        event = self._pending
        if event is None and kind not in (Answer.OK, Answer.ERR):
            raise Pop3ProtocolError(f"{kind.value} with no event to answer")
        target = self._state if event is None else next_state(self._state, type(event), kind)
        if isinstance(event, ev.LOGIN_EVENTS) and kind is Answer.OK:
            if not self._login_confirmed:
                target, self._login_unconfirmed = State.AUTHORIZATION, True
            self._login_confirmed = False
        self._out.append(line.encode("utf-8", "surrogateescape") + b"\r\n")
        self._pending = None
        if isinstance(event, ev.User):
            self._user = event.name if kind is Answer.OK else None
        elif isinstance(event, ev.Pass):
            self._user = None  # RFC 1939 7: after PASS, a new login starts with USER
        if target is State.CLOSED or (self._close_after and kind is not Answer.MULTILINE):
            self._close()
            return
        self._state = target
        if target is State.TLS_PENDING:
            self.discard_input()  # pipelined clear text must never become a command

    # -- commands -------------------------------------------------------------------------

    def _command_event(self) -> _Result:
        line = self._in.take_line(self._max_line)
        if line is None:
            return self._connection_closed() if self._in.eof else NEED_DATA
        if line is TOO_LONG:
            return self._error(LINE_TOO_LONG)
        command = parse_command_line(line)
        if self._state is State.TRANSACTION:
            handler = _TRANSACTION.get(command.verb, _unimplemented)
        else:
            handler = _AUTHORIZATION.get(command.verb, _authorization_first)
        return handler(self, command.argument)

    def _auth_line_event(self) -> _Result:
        line = self._in.take_line(self._max_auth_line)
        if line is None:
            return self._connection_closed() if self._in.eof else NEED_DATA
        if line is TOO_LONG:
            self._state = State.AUTHORIZATION  # the -ERR ends the exchange
            return self._error(LINE_TOO_LONG)
        return self._emit(ev.AuthLine(parse_auth_line(line)))

    def _user_command(self, argument: str) -> _Result:
        return self._emit(ev.User(argument)) if argument else self._error(SYNTAX_ERROR)

    def _pass(self, argument: str) -> _Result:
        if self._user is None:  # checked before the syntax, as qmail-popup's pop3_pass
            return self._error(USER_FIRST)
        return self._emit(ev.Pass(argument)) if argument else self._error(SYNTAX_ERROR)

    def _apop(self, argument: str) -> _Result:
        split = split_apop(argument)
        return self._error(SYNTAX_ERROR) if split is None else self._emit(ev.Apop(*split))

    def _stls(self, argument: str) -> _Result:
        if self._tls:
            return self._error(TLS_ACTIVE)
        return self._error(SYNTAX_ERROR) if argument else self._emit(ev.Stls())

    def _quit(self, argument: str) -> _Result:
        self._ignore_input = True  # nothing pipelined after QUIT is looked at
        self._in.clear()
        return self._emit(ev.Quit())

    def _numbered(self, make: Callable[[int], ev.Event], argument: str) -> _Result:
        number = parse_message_number(argument)
        return self._error(number) if isinstance(number, str) else self._emit(make(number))

    def _listing(self, make: Callable[[int | None], ev.Event], argument: str) -> _Result:
        return self._numbered(make, argument) if argument else self._emit(make(None))

    def _top(self, argument: str) -> _Result:
        parsed = parse_top(argument)
        return self._error(parsed) if isinstance(parsed, str) else self._emit(ev.Top(*parsed))

    # -- bookkeeping ----------------------------------------------------------------------

    def _emit(self, event: ev.Event) -> ev.Event:
        self._pending = event
        return event

    def _reply(self, line: str) -> _Again:
        self._out.append(line.encode("utf-8", "surrogateescape") + b"\r\n")
        return _AGAIN

    def _error(self, text: str) -> _Again:
        self._errors += 1
        if self._errors > self._max_errors:
            self._reply("-ERR " + TOO_MANY_ERRORS)
            self._close()
            return _AGAIN
        return self._reply("-ERR " + text)

    def _connection_closed(self) -> ev.Event:
        self._close()
        return ev.ConnectionClosed()

    def _close(self) -> None:
        self.closed = True
        self._state = State.CLOSED
        self._in.clear()
        self._pending = None
        self._encoder = None


_Handler = Callable[[Pop3Connection, str], _Result]


def _authorization_first(conn: Pop3Connection, argument: str) -> _Result:
    return conn._error(AUTHORIZATION_FIRST)


def _unimplemented(conn: Pop3Connection, argument: str) -> _Result:
    return conn._error(UNIMPLEMENTED)


_AUTHORIZATION: dict[str, _Handler] = {
    "USER": Pop3Connection._user_command,
    "PASS": Pop3Connection._pass,
    "APOP": Pop3Connection._apop,
    "AUTH": lambda conn, arg: conn._emit(ev.Auth(*parse_auth_argument(arg))),
    "CAPA": lambda conn, arg: conn._emit(ev.Capa()),
    "STLS": Pop3Connection._stls,
    "NOOP": lambda conn, arg: conn._reply("+OK "),  # qmail-popup's okay(), no event
    "QUIT": Pop3Connection._quit,
}
"""qmail-popup's commands plus the capa/auth patches and STLS; the rest: authorization first."""

_TRANSACTION: dict[str, _Handler] = {
    "STAT": lambda conn, arg: conn._emit(ev.Stat()),
    "LIST": lambda conn, arg: conn._listing(ev.List, arg),
    "UIDL": lambda conn, arg: conn._listing(ev.Uidl, arg),
    # RFC 1939: RETR takes one argument (qmail ran it as TOP, so "RETR 1 5" was a TOP).
    "RETR": lambda conn, arg: conn._numbered(ev.Retr, arg),
    "TOP": Pop3Connection._top,
    "DELE": lambda conn, arg: conn._numbered(ev.Dele, arg),
    "NOOP": lambda conn, arg: conn._emit(ev.Noop()),
    "RSET": lambda conn, arg: conn._emit(ev.Rset()),
    "LAST": lambda conn, arg: conn._emit(ev.Last()),
    "CAPA": lambda conn, arg: conn._emit(ev.Capa()),
    "QUIT": Pop3Connection._quit,
}
"""qmail-pop3d's commands plus CAPA (capa patch); the rest, USER/AUTH/STLS too: unimplemented."""
