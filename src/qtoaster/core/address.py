"""qmail's parser for the argument of MAIL FROM / RCPT TO (qmail-smtpd.c ``addrparse``).

This follows qmail 1.03 exactly, not RFC 5321's grammar (spec 3.3):

- If the argument contains ``<``, the path is the text after the first ``<`` up to the next
  unquoted ``>``.  Otherwise ("partner should read RFC 821") it is the text after the first
  ``:``, leading spaces skipped, ended by a space.  ``FROM:`` / ``TO:`` are not checked.
- A leading source route (``@a,@b:``) is dropped up to and including the first ``:``.
- Double quotes toggle a quoted state and are removed (a ``>`` inside quotes does not end the
  path); a backslash makes the next character literal and is removed.
- Nothing else is checked: ``<>`` is the null sender, ``<x>`` without ``@`` is fine.  The only
  failure is a path longer than :data:`MAX_ADDRESS_BYTES` bytes.

One check is ours, not qmail's: :func:`breaks_envelope` finds CR, LF and NUL, which every
entry point (SMTP MAIL/RCPT, sendmail, queue-inject) refuses in addresses and parameters.
A CR or LF would end a header line once the address is written into ``Return-Path`` or
``Delivered-To`` (header injection); NUL separates the fields of qmail-queue's envelope.

Invariant: the functions are pure and total on ``str`` (decoded with utf-8 surrogateescape, so
any wire byte survives); they raise only :class:`AddressSyntaxError`.  Rewriting
``@[ip]`` to control/localiphost needs the host's IPs and is the driver's job, not ours.
"""

from __future__ import annotations

from qtoaster.core.errors import FormatError

MAX_ADDRESS_BYTES = 900
"""qmail's limit (spec 3.3).  NOTE: qmail counts the terminating NUL (``addr.len > 900``), so
the original refuses 900 bytes already; we refuse more than 900 as the spec words it."""


ENVELOPE_BREAKS = frozenset("\r\n\0")
"""Characters never allowed in an envelope address or an ESMTP parameter."""


def breaks_envelope(text: str) -> bool:
    """True when *text* holds CR, LF or NUL (see the module docstring)."""
    return not ENVELOPE_BREAKS.isdisjoint(text)


class AddressSyntaxError(FormatError, ValueError):
    """The path cannot be used; qmail answers ``555 syntax error (#5.5.4)``."""


def parse_path(argument: str) -> str:
    """The address in a MAIL/RCPT argument (e.g. ``FROM:<a@b>``), per qmail's rules."""
    return parse_mail_argument(argument)[0]


def parse_mail_argument(argument: str) -> tuple[str, list[str]]:
    """The address and the space-separated words after it (ESMTP parameters, RFC 1870).

    The words are the text after the character that ended the path (``>`` or, in the
    bracket-less form, a space); empty words from repeated spaces are dropped.
    """
    start, terminator = _path_start(argument)
    address, end = _copy_path(argument, start, terminator)
    if len(address) > MAX_ADDRESS_BYTES // 4 and _byte_length(address) > MAX_ADDRESS_BYTES:
        raise AddressSyntaxError(f"address longer than {MAX_ADDRESS_BYTES} bytes")
    rest = argument[end + 1 :] if end < len(argument) else ""
    return address, [word for word in rest.split(" ") if word]


def _path_start(argument: str) -> tuple[int, str]:
    """Where the path begins (after any source route) and which character ends it."""
    bracket = argument.find("<")
    if bracket >= 0:
        start, terminator = bracket + 1, ">"
    else:
        colon = argument.find(":")
        start = colon + 1 if colon >= 0 else len(argument)
        while start < len(argument) and argument[start] == " ":
            start += 1
        terminator = " "
    if argument.startswith("@", start):
        # qmail scans for the ':' without regard to the terminator: "@a,@b:x" -> "x".
        colon = argument.find(":", start)
        start = colon + 1 if colon >= 0 else len(argument)
    return start, terminator


def _copy_path(argument: str, start: int, terminator: str) -> tuple[str, int]:
    """Copy from ``start`` to the unquoted terminator, removing quotes and backslashes.

    Returns the address and the index of the terminator (``len(argument)`` if none).
    """
    end = argument.find(terminator, start)
    if end < 0:
        end = len(argument)
    segment = argument[start:end]
    if '"' not in segment and "\\" not in segment:
        return segment, end  # fast path: nothing to unquote before the terminator
    out: list[str] = []
    escaped = quoted = False
    i = start
    while i < len(argument):
        ch = argument[i]
        if escaped:
            out.append(ch)
            escaped = False
        elif ch == terminator and not quoted:
            break
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        else:
            out.append(ch)
        i += 1
    return "".join(out), i


def _byte_length(address: str) -> int:
    return len(address.encode("utf-8", "surrogateescape"))
