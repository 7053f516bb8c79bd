"""SMTP replies as values, rendered in one place.

A :class:`Reply` is a code and a text (which may span lines).  qmail embeds the
RFC 3463 enhanced status code in the text as ``(#x.y.z)``; we keep its texts byte
for byte, so the enhanced code lives inside ``text`` where qmail puts it.

Invariant: ``render()`` always yields lines ``CODE-text`` / ``CODE text`` ending
in CRLF, with no bare CR or LF inside a line (RFC 5321 4.2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    text: str

    @property
    def lines(self) -> list[str]:
        return self.text.replace("\r", "").split("\n")

    @property
    def is_positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def is_temporary(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        return self.code >= 500

    @property
    def enhanced_code(self) -> str:
        """The RFC 3463 code: qmail's ``(#x.y.z)`` in the text, else the class's x.0.0."""
        found = _QMAIL_ENHANCED.search(self.text)
        return found.group(1) if found else f"{self.code // 100}.0.0"

    def render(self, enhanced: bool = False) -> bytes:
        """The wire form; ``enhanced`` prefixes every line with the RFC 2034 code."""
        lines = self.lines
        # RFC 2034 2/RFC 3463 2: enhanced codes exist for 2xx, 4xx and 5xx only (not 354/334).
        prefix = f"{self.enhanced_code} " if enhanced and self.code // 100 in (2, 4, 5) else ""
        out = []
        for i, line in enumerate(lines):
            sep = " " if i == len(lines) - 1 else "-"
            out.append(f"{self.code}{sep}{prefix}{line}\r\n")
        return "".join(out).encode("utf-8", "surrogateescape")


_QMAIL_ENHANCED = re.compile(r"\(#([245]\.\d{1,3}\.\d{1,3})")


# qmail-smtpd's fixed replies (spec section 26), byte for byte.
OK = Reply(250, "ok")
FLUSHED = Reply(250, "flushed")
VRFY = Reply(252, "send some mail, i'll try my best")
HELP = Reply(214, "qtoaster home page: https://qtoaster.invalid/ (qmail-compatible)")
GO_AHEAD = Reply(354, "go ahead")
UNIMPLEMENTED = Reply(502, "unimplemented (#5.5.1)")
SYNTAX_ERROR = Reply(555, "syntax error (#5.5.4)")
MAIL_FIRST = Reply(503, "MAIL first (#5.5.1)")
RCPT_FIRST = Reply(503, "RCPT first (#5.5.1)")
NESTED_MAIL = Reply(503, "5.5.1 Error: nested MAIL command")
NOT_RCPTHOSTS = Reply(553, "sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)")
DATABYTES = Reply(552, "sorry, that message size exceeds my databytes limit (#5.3.4)")
TOO_MANY_HOPS = Reply(554, "too many hops, this message is looping (#5.4.6)")
QQT_FAILURE = Reply(451, "qqt failure (#4.3.0)")
TIMEOUT = Reply(451, "timeout (#4.4.2)")
BARE_LF = Reply(451, "See http://pobox.com/~djb/docs/smtplf.html.")
CONTROLS = Reply(421, "unable to read controls (#4.3.0)")
LINE_TOO_LONG = Reply(500, "line too long (#5.5.2)")
TOO_MANY_ERRORS = Reply(421, "too many errors, closing connection (#4.7.0)")
TOO_MANY_COMMANDS = Reply(421, "too many commands, closing connection (#4.7.0)")
TOO_MANY_RCPTS = Reply(452, "too many recipients (#4.5.3)")

# Ours (issue 12): CR, LF or NUL in a MAIL/RCPT address or parameter (header injection into
# Return-Path/Delivered-To).  RFC 3463: 5.1.7 bad sender's, 5.1.3 bad destination syntax.
BAD_SENDER_SYNTAX = Reply(501, "bad address syntax (#5.1.7)")
BAD_RCPT_SYNTAX = Reply(501, "bad address syntax (#5.1.3)")
SHUTTING_DOWN = Reply(421, "service shutting down, try again later (#4.3.2)")
INTERNAL_ERROR = Reply(421, "internal error, closing connection (#4.3.0)")

# Ours, not qmail's (qmail-smtpd passed 8-bit addresses on).  An address with a non-ASCII
# byte is taken only in a transaction whose MAIL had SMTPUTF8 (RFC 6531 3.4), and only as
# valid UTF-8; otherwise it could not be delivered or bounced properly: refused at MAIL or
# RCPT with RFC 6531's enhanced code (docs/protocols.md).
NON_ASCII_ADDRESS = Reply(553, "sorry, non-ASCII address needs SMTPUTF8 (#5.6.7)")
NOT_UTF8_ADDRESS = Reply(553, "sorry, that address is not valid UTF-8 (#5.6.7)")
SMTPUTF8_VALUE = Reply(501, "SMTPUTF8 takes no value (#5.5.4)")


def too_many_connections(me: str, per_ip: bool) -> Reply:
    """The refusal of a connection over [smtpd] max_connections or max_per_ip, before any
    greeting (qmail's "me" first, as in its 220; RFC 3463 4.3.2 system not accepting
    messages, 4.7.0 for a limit on the client)."""
    if per_ip:
        return Reply(421, f"{me} too many connections from your address (#4.7.0)")
    return Reply(421, f"{me} too many connections, try again later (#4.3.2)")
