"""A minimal stand-in for the IMAP engine (protocols/imap/server.py, built on another
branch of issue 15) so that the imapd session's tests run before it is merged.

Only what the session's pre-login tests need: tagged lines with atoms, quoted strings and
synchronising literals; CAPABILITY NOOP LOGOUT STARTTLS LOGIN AUTHENTICATE ID IDLE; the
state check; AuthLine and IdleDone. Used only when the real engine is missing
(sitecustomize.py here); delete with this directory once the engine is merged.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from qtoaster.protocols.imap import commands as cmd


class State(enum.Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


NEED_DATA = object()


@dataclass(frozen=True, slots=True)
class AuthLine:
    text: str


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    pass


class _Bad(Exception):
    pass


class ImapConnection:
    def __init__(self, *, tls: bool = False, max_line: int = 65536, max_literal: int = 1 << 20):
        self.state = State.NOT_AUTHENTICATED
        self.closed = False
        self.tls = tls
        self._in = bytearray()
        self._out = bytearray()
        self._max_line = max_line
        self._mode = "command"  # command, auth, idle, tls
        self._eof = False
        self._eof_sent = False
        self._announced = -1  # where the literal we said "+" to starts

    @property
    def buffered(self) -> int:
        return len(self._in)

    def receive_data(self, data: bytes) -> None:
        if not data:
            self._eof = True
        self._in += data

    def data_to_send(self) -> bytes:
        out, self._out = bytes(self._out), bytearray()
        return out

    def untagged(self, text: str) -> None:
        self._out += b"* " + text.encode("utf-8", "surrogateescape") + b"\r\n"

    def untagged_bytes(self, data: bytes) -> None:
        self._out += b"* " + data

    def tagged(self, tag: str, status: str, text: str, code: str | None = None) -> None:
        code_part = f"[{code}] " if code else ""
        self._out += f"{tag} {status} {code_part}{text}\r\n".encode("utf-8", "surrogateescape")

    def continuation(self, text: str) -> None:
        self._out += f"+ {text}\r\n".encode()

    def expect_auth_line(self) -> None:
        self._mode = "auth"

    def start_idle(self) -> None:
        self._mode = "idle"

    def start_tls(self) -> None:
        self._mode = "tls"
        self._in.clear()

    def start_tls_done(self) -> None:
        self._mode = "command"
        self.tls = True

    def discard_input(self) -> None:
        self._in.clear()

    def close_after_send(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def _command_line(self) -> bytes | None:
        """One whole command, its literals inlined as quoted strings; None: more needed."""
        buf, pos, parts = self._in, 0, []
        while True:
            end = buf.find(b"\n", pos)
            if end < 0:
                return None
            line = bytes(buf[pos : end + 1]).rstrip(b"\r\n")
            literal = re.search(rb"\{(\d+)(\+?)\}$", line)
            if literal is None or self._mode != "command":
                del buf[: end + 1]
                return b"".join(parts) + line
            size, start = int(literal.group(1)), end + 1
            if len(buf) < start + size:
                if not literal.group(2) and self._announced != start:
                    self._announced = start
                    self.continuation("Ready for literal data")
                return None
            data = bytes(buf[start : start + size])
            quoted = data.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
            parts.append(line[: literal.start()] + b'"' + quoted + b'"')
            pos = start + size

    def next_event(self) -> object:
        if self._mode == "tls":
            return NEED_DATA
        while True:
            line = self._command_line()
            if line is None:
                if self._eof and not self._eof_sent:
                    self._eof_sent = True
                    return ConnectionClosed()
                return NEED_DATA
            self._announced = -1
            text = line.decode("utf-8", "surrogateescape")
            if self._mode == "auth":
                self._mode = "command"
                return AuthLine(text)
            if self._mode == "idle":
                if text.upper() == "DONE":
                    self._mode = "command"
                    return cmd.IdleDone()
                continue
            tag, _, rest = text.partition(" ")
            if not tag or not rest:
                self.untagged("BAD Missing command")
                continue
            try:
                return cmd.Command(tag, self._body(self._tokens(rest)))
            except _Bad as exc:
                self.tagged(tag, "BAD", str(exc))

    def _tokens(self, rest: str) -> list[object]:
        """Atoms, quoted strings, parenthesised lists (one level), literals inline."""
        out: list[object] = []
        stack: list[list[object]] = [out]
        i = 0
        while i < len(rest):
            c = rest[i]
            if c == " ":
                i += 1
            elif c == '"':
                j, buf = i + 1, []
                while j < len(rest) and rest[j] != '"':
                    if rest[j] == "\\":
                        j += 1
                    buf.append(rest[j])
                    j += 1
                stack[-1].append("".join(buf))
                i = j + 1
            elif c == "(":
                stack.append([])
                i += 1
            elif c == ")":
                inner = stack.pop()
                stack[-1].append(inner)
                i += 1
            else:
                j = i
                while j < len(rest) and rest[j] not in ' ()"':
                    j += 1
                stack[-1].append(rest[i:j])
                i = j
        return out

    def _body(self, tokens: list[object]) -> cmd.Body:
        name = str(tokens[0]).upper()
        args = tokens[1:]
        if name in ("LOGIN", "AUTHENTICATE", "STARTTLS") and self.state is not (
            State.NOT_AUTHENTICATED
        ):
            raise _Bad("Command not valid in this state")
        if name == "CAPABILITY":
            return cmd.Capability()
        if name == "NOOP":
            return cmd.Noop()
        if name == "LOGOUT":
            return cmd.Logout()
        if name == "STARTTLS":
            if self.tls:
                raise _Bad("TLS already active")
            return cmd.StartTls()
        if name == "LOGIN" and len(args) == 2:
            return cmd.Login(str(args[0]), str(args[1]))
        if name == "AUTHENTICATE" and args:
            return cmd.Authenticate(str(args[0]), str(args[1]) if len(args) > 1 else None)
        if name == "ID" and args:
            if args[0] == "NIL" or not isinstance(args[0], list):
                return cmd.Id(None)
            values = [str(v) for v in args[0]]
            return cmd.Id(tuple(zip(values[::2], values[1::2], strict=False)))
        if name == "IDLE" and self.state is not State.NOT_AUTHENTICATED:
            return cmd.Idle()
        raise _Bad("Unknown command or not valid in this state")
