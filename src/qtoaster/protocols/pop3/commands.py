"""The POP3 command-line grammar: verb and argument, message numbers, APOP and TOP arguments.

Command lines are split as qmail-popup and qmail-pop3d do it, with the same commands.c as
qmail-smtpd (spec 3.1): one trailing CR stripped, a NUL ends the line, the verb is the text
before the first space (ASCII, case-insensitive), the argument the rest after the spaces.

Message numbers follow qmail-pop3d's ``msgno`` (spec 19.5): ``scan_ulong`` reads the leading
digits, so ``"2x"`` is 2; no digit is ``-ERR syntax error`` and 0 is ``-ERR messages are
counted from 1``.  Whether the message exists is the mailbox's business.

Invariant: every function here is pure and total; none raises on any input.
"""

from __future__ import annotations

from qtoaster.protocols.smtp.commands import CommandLine, decode, parse_command_line

__all__ = [
    "COUNTED_FROM_1",
    "NUMBER_CAP",
    "SYNTAX_ERROR",
    "CommandLine",
    "decode",
    "leading_number",
    "parse_command_line",
    "parse_message_number",
    "parse_top",
    "split_apop",
]

SYNTAX_ERROR = "syntax error"
COUNTED_FROM_1 = "messages are counted from 1"

NUMBER_CAP = 2**64 - 1
"""Numbers longer than 20 digits are reported as this (qmail's unsigned long would wrap);
it also keeps ``int()`` away from its digit-count limit.  No mailbox has that many messages."""


def leading_number(text: str) -> tuple[int, int] | None:
    """qmail's ``scan_ulong``: the value of the leading ASCII digits and how many there are."""
    if 0 < len(text) < 20 and text.isascii() and text.isdigit():
        return int(text), len(text)  # the usual "RETR 17": digits only, far below NUMBER_CAP
    end = 0
    while end < len(text) and "0" <= text[end] <= "9":
        end += 1
    if end == 0:
        return None
    return (NUMBER_CAP if end > 20 else min(int(text[:end]), NUMBER_CAP)), end


def parse_message_number(argument: str) -> int | str:
    """A message number >= 1, or the text of qmail-pop3d's -ERR for it."""
    scanned = leading_number(argument)
    if scanned is None:
        return SYNTAX_ERROR
    if scanned[0] == 0:
        return COUNTED_FROM_1
    return scanned[0]


def parse_top(argument: str) -> tuple[int, int | None] | str:
    """``TOP n k``: the message number and k, or an -ERR text.

    qmail-pop3d's ``pop3_top``: after the digits of n, skip spaces, then scan k; no digits
    there (``TOP 1``, ``TOP 1 x``, ``TOP 1x 2``) means the whole message (None).
    """
    number = parse_message_number(argument)
    if isinstance(number, str):
        return number
    scanned = leading_number(argument)
    assert scanned is not None  # parse_message_number found digits
    lines = leading_number(argument[scanned[1] :].lstrip(" "))
    return number, (lines[0] if lines else None)


def split_apop(argument: str) -> tuple[str, str] | None:
    """``APOP name digest``: split at the first space (qmail-popup), None if there is none."""
    name, space, digest = argument.partition(" ")
    return (name, digest) if space else None
