"""The events the IMAP engine (server.ImapConnection.next_event) hands to the session.

- :class:`commands.Command`: one complete, parsed command (commands.py);
- :class:`AuthLine`: the client's line after an AUTHENTICATE continuation, once the session
  called ``expect_auth_line()``;
- :class:`commands.IdleDone`: the line that ends IDLE, after ``start_idle()``;
- :class:`ConnectionClosed`: the client closed its side (EOF), emitted once.
"""

from __future__ import annotations

from dataclasses import dataclass

from qtoaster.protocols.imap.commands import Command, IdleDone

__all__ = ["AuthLine", "Command", "ConnectionClosed", "Event", "IdleDone"]


@dataclass(frozen=True, slots=True)
class AuthLine:
    """One client line of a SASL exchange (RFC 9051 6.2.2): the base64 text as sent, CR LF
    stripped, never parsed as a command. ``*`` is the client's cancel: the session answers
    it (``tag BAD`` per RFC 9051)."""

    text: str


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """EOF from the client once every complete command was taken; the engine is closed."""


Event = Command | AuthLine | IdleDone | ConnectionClosed
