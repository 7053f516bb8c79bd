"""ImapConnection: the sans-IO IMAP server engine (bytes in, events out; answers in, bytes out).

Driven like the POP3 engine by net/driver.py's EngineDriver: the session sends the greeting
(``untagged("OK ...")``), the driver feeds socket bytes with :meth:`receive_data`, pulls
events with :meth:`next_event` until :data:`NEED_DATA`, the session answers each one
(``untagged``, ``untagged_bytes``, ``tagged``, ``continuation``) and the driver writes
:meth:`data_to_send`. Events: :class:`commands.Command`, :class:`events.AuthLine`,
:class:`commands.IdleDone`, :class:`events.ConnectionClosed` (docs/imap-engine.md).

Pipelining: several commands in one read come out one at a time, in order. IMAP would let a
server answer them out of order; this engine does not need that: the driver takes one
command, the session answers it fully (its tagged response), then the driver takes the next
(EngineDriver's ``busy`` flag holds the next ones back while an answer waits). Input is
framed only in :meth:`next_event`, so a literal's ``+`` continuation is sent when the
command is reached, never ahead of the answers to the commands before it.

What the engine answers by itself (texts in docs/imap-engine.md): ``+ Ready for literal
data`` for a synchronizing literal within the limits; ``tag BAD <why>`` for a malformed
command (``* BAD`` when no tag can be read), ``tag BAD unknown command``, a command the
current :attr:`state` does not allow (states.py), a line over ``max_line`` (``[TOOBIG]``), a
literal over its limit (``tag NO [TOOBIG]`` for APPEND, ``tag BAD [TOOBIG]`` otherwise:
lexer.py); after ``max_errors`` consecutive such errors ``* BYE too many errors`` and the
engine closes. ``tag BAD Expected DONE.`` when the line after IDLE is not DONE.

Modes the session switches (each for one line): :meth:`expect_auth_line` after a SASL
continuation (the next line is an AuthLine); :meth:`start_idle` after ``+ idling`` (the next
line must be DONE; the session keeps taking events while idling). :meth:`start_tls` after
``tag OK`` to STARTTLS drops buffered input (command injection, as POP3's STLS) and
suspends the engine until :meth:`start_tls_done`.

Invariants: no I/O imports; after ``next_event`` returned NEED_DATA at most ``max_line``
input bytes are buffered (literal bytes are moved into the literal as they come; a refused
literal's bytes are dropped as they come) except in the TLS-pending mode, which the driver
ends; every output line ends in CRLF and a text holding CR or LF raises ValueError; no byte
buffered when start_tls() is called ever becomes an event.
"""

from __future__ import annotations

import enum
import re
from typing import Final

from qtoaster.protocols.imap import events as ev
from qtoaster.protocols.imap.commands import IdleDone
from qtoaster.protocols.imap.grammar import ParseError
from qtoaster.protocols.imap.lexer import FrameError, Framer
from qtoaster.protocols.imap.parser import NoTag, parse_command
from qtoaster.protocols.imap.states import ImapProtocolError, State, refusal

__all__ = ["NEED_DATA", "ImapConnection", "ImapProtocolError", "NeedData", "State"]

LITERAL_CONTINUATION: Final = b"+ Ready for literal data\r\n"
TOO_MANY_ERRORS: Final = "too many errors"
EXPECTED_DONE: Final = "Expected DONE."
LINE_TOO_LONG: Final = "line too long"

DEFAULT_MAX_LINE: Final = 8192
DEFAULT_MAX_LITERAL: Final = 64 * 1024 * 1024  # APPENDLIMIT
DEFAULT_MAX_STRING_LITERAL: Final = 64 * 1024

_STATUSES: Final = frozenset(("OK", "NO", "BAD"))
_CODE = re.compile(r"[^\[\]\r\n]+")


class NeedData(enum.Enum):
    """The type of :data:`NEED_DATA` (an enum member, so ``is`` checks narrow types)."""

    NEED_DATA = "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA


class _Mode(enum.Enum):
    COMMAND = "command"
    AUTH_LINE = "auth-line"
    IDLE = "idle"
    TLS_PENDING = "tls-pending"


def _check_text(text: str) -> None:
    if "\r" in text or "\n" in text:
        raise ValueError(f"a response text holds CR or LF: {text!r}")


class ImapConnection:
    def __init__(
        self,
        *,
        max_line: int = DEFAULT_MAX_LINE,
        max_literal: int = DEFAULT_MAX_LITERAL,
        max_string_literal: int = DEFAULT_MAX_STRING_LITERAL,
        max_errors: int = 20,
        tls: bool = False,
    ) -> None:
        if max_errors < 1 or max_line < 64 or min(max_literal, max_string_literal) < 0:
            raise ValueError("limits must be positive (max_line at least 64)")
        self._max_line = max_line
        self._max_errors = max_errors
        self._out: list[bytes] = []
        self._framer = Framer(
            max_line=max_line,
            max_literal=max_literal,
            max_string_literal=max_string_literal,
            on_continue=self._literal_continuation,
        )
        self._mode = _Mode.COMMAND
        self._state = State.NOT_AUTHENTICATED
        self._tls = tls
        self._errors = 0
        self._last_tag = ""  # the tag of the last Command returned (IDLE's, AUTHENTICATE's)
        self._close_after = False
        self.closed = False

    # -- properties -------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @state.setter
    def state(self, value: State) -> None:
        """Set by the session: AUTHENTICATED after a login, SELECTED after SELECT/EXAMINE,
        AUTHENTICATED after CLOSE/UNSELECT, LOGOUT after LOGOUT (input is then ignored)."""
        self._state = value

    @property
    def tls(self) -> bool:
        """Whether the session is encrypted: ``tls=True`` given, or after start_tls_done()."""
        return self._tls

    @property
    def buffered(self) -> int:
        """Input bytes received and not yet framed (literal bytes already taken excluded)."""
        return self._framer.buffered

    # -- input ------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes from the client; ``b""`` means EOF. Ignored once closed, in LOGOUT and
        after close_after_send() (nothing more will be read)."""
        if self.closed or self._framer.eof or self._close_after or self._state is State.LOGOUT:
            return
        self._framer.feed(data)

    def next_event(self) -> ev.Event | NeedData:
        """The next event, or NEED_DATA when more input is needed (or nothing is read:
        closed, LOGOUT, TLS pending, close_after_send() called)."""
        framer = self._framer
        while not self.closed:
            if self._state is State.LOGOUT or self._close_after:
                return NEED_DATA
            mode = self._mode
            if mode is _Mode.COMMAND:
                result = framer.take()
                if result is None:
                    return self._connection_closed() if framer.eof else NEED_DATA
                if isinstance(result, FrameError):
                    self._error(result.tag, result.status, result.text, result.code)
                    continue
                try:
                    command = parse_command(result, self._refusal)
                except NoTag as exc:
                    self._error(None, "BAD", exc.text, exc.code)
                    continue
                except ParseError as exc:
                    self._error(exc.tag, "BAD", exc.text, exc.code)
                    continue
                self._errors = 0
                self._last_tag = command.tag
                return command
            if mode is _Mode.TLS_PENDING:
                return self._connection_closed() if framer.eof else NEED_DATA
            line = framer.take_line(self._max_line)
            if line is None:
                return self._connection_closed() if framer.eof else NEED_DATA
            self._mode = _Mode.COMMAND
            if line is False:
                self._error(self._last_tag, "BAD", LINE_TOO_LONG, "TOOBIG")
                if mode is _Mode.IDLE:
                    return IdleDone(bad=True)
                continue
            assert isinstance(line, bytes)
            if mode is _Mode.AUTH_LINE:
                return ev.AuthLine(line.decode("utf-8", "surrogateescape"))
            if line.upper() == b"DONE":
                return IdleDone()
            self.tagged(self._last_tag, "BAD", EXPECTED_DONE)
            return IdleDone(bad=True)
        return NEED_DATA

    def _refusal(self, name: str) -> str | None:
        return refusal(name, self._state)

    # -- answers ----------------------------------------------------------------------------

    def untagged(self, text: str) -> None:
        """``* text``."""
        _check_text(text)
        self._out.append(b"* " + text.encode("utf-8", "surrogateescape") + b"\r\n")

    def untagged_bytes(self, data: bytes) -> None:
        """A pre-encoded response (it may hold literals), CRLF-ended by the caller."""
        self._out.append(data)

    def tagged(self, tag: str, status: str, text: str, code: str | None = None) -> None:
        """``tag status [code] text``; ``status`` is OK, NO or BAD."""
        if status not in _STATUSES:
            raise ValueError(f"not a tagged status: {status!r}")
        _check_text(tag)
        _check_text(text)
        head = f"{tag} {status} "
        if code is not None:
            if _CODE.fullmatch(code) is None:
                raise ValueError(f"bad response code {code!r}")
            head += f"[{code}] "
        self._out.append((head + text).encode("utf-8", "surrogateescape") + b"\r\n")

    def continuation(self, text: str) -> None:
        """``+ text`` (a SASL challenge in base64, or ``idling``)."""
        _check_text(text)
        self._out.append(b"+ " + text.encode("utf-8", "surrogateescape") + b"\r\n")

    def data_to_send(self) -> bytes:
        """Everything queued so far; empties the queue. After close_after_send(), the
        engine is closed once this has handed the last bytes out."""
        out = b"".join(self._out)
        self._out.clear()
        if self._close_after:
            self._close()
        return out

    def close_after_send(self) -> None:
        """Take no more commands; close once the queued answers were taken (LOGOUT's
        ``* BYE`` + tagged OK, a fatal error)."""
        self._close_after = True

    def close(self) -> None:
        """Close now (a timeout, shutdown); queued output is still handed out once."""
        self._close()

    # -- modes ------------------------------------------------------------------------------

    def expect_auth_line(self) -> None:
        """After a SASL continuation: the next line is an AuthLine (``*``: the client's
        cancel, which the session answers). One line; call again after each challenge. A
        line over ``max_line`` gets ``tag BAD [TOOBIG] line too long`` for the
        AUTHENTICATE's tag and ends the exchange (the next event is a Command)."""
        self._set_line_mode(_Mode.AUTH_LINE)

    def start_idle(self) -> None:
        """After ``+ idling``: the next line must be DONE (any case) -> IdleDone(); any
        other line gets ``tag BAD Expected DONE.`` and IdleDone(bad=True) ends the IDLE."""
        self._set_line_mode(_Mode.IDLE)

    def start_tls(self) -> None:
        """After ``tag OK`` to STARTTLS: drop buffered input, read nothing until
        start_tls_done() (the driver calls discard_input() again before the handshake)."""
        self._framer.clear()
        self._mode = _Mode.TLS_PENDING

    def start_tls_done(self) -> None:
        """The TLS handshake succeeded: commands again, over TLS."""
        if self._mode is not _Mode.TLS_PENDING:
            raise ImapProtocolError("start_tls_done() without start_tls()")
        self._mode = _Mode.COMMAND
        self._tls = True

    def discard_input(self) -> None:
        """Drop every byte received and not yet framed, a partial command included."""
        self._framer.clear()

    def _set_line_mode(self, mode: _Mode) -> None:
        if self._mode is not _Mode.COMMAND or not self._last_tag:
            raise ImapProtocolError(f"{mode.value} mode needs a command answered first")
        self._mode = mode

    # -- bookkeeping ------------------------------------------------------------------------

    def _literal_continuation(self) -> None:
        self._out.append(LITERAL_CONTINUATION)

    def _error(self, tag: str | None, status: str, text: str, code: str | None) -> None:
        self._errors += 1
        if self._errors > self._max_errors:
            self.untagged("BYE " + TOO_MANY_ERRORS)
            self._close()
            return
        if tag is None:
            self.untagged(f"BAD [{code}] {text}" if code else f"BAD {text}")
        else:
            self.tagged(tag, status, text, code)

    def _connection_closed(self) -> ev.ConnectionClosed:
        self._close()
        return ev.ConnectionClosed()

    def _close(self) -> None:
        self.closed = True
        self._framer.clear()
