"""The SMTP command-line grammar: verb, argument, and MAIL/RCPT parameters.

Command lines are split the way qmail's commands.c does it (spec 3.1): one trailing CR is
stripped, the verb is the text before the first space (compared case-insensitively, ASCII
only), the argument is the rest after skipping spaces.  A NUL ends the line, as it ends the
C string in qmail; this also keeps NUL out of envelope addresses, where it is the separator
(qmail-queue(8)).

ESMTP parameters (RFC 5321 4.1.2 ``esmtp-param``, RFC 1870 SIZE, RFC 6152 BODY) are read the
way fehcom's mailfrom_parms reads them (spec 5): every space-separated word, keyword
case-insensitive, ``SIZE=<digits>`` with non-digits ending the number.

``AUTH`` arguments (RFC 4954 4) are split the way the qmail auth patch's ``smtp_auth`` does:
the mechanism is the text before the first space, the initial response the rest after the
spaces that follow it.  Lines of an AUTH exchange are not commands: ``parse_auth_line`` only
strips one trailing CR (qmail's ``authgetl``).

Invariant: every function here is pure and total; none raises on any input.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

SIZE_CAP = 2**64 - 1
"""Declared sizes above this (or longer than 20 digits) are reported as this value: larger than
any databytes limit, and it keeps ``int()`` away from its digit-count limit."""


@dataclass(frozen=True, slots=True)
class CommandLine:
    verb: str  # upper-cased (ASCII only)
    argument: str


@dataclass(frozen=True, slots=True)
class Parameters:
    params: dict[str, str | None]
    size: int | None
    body: str | None


def decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def parse_command_line(line: bytes) -> CommandLine:
    """Split one command line (without its LF) into verb and argument."""
    if line.endswith(b"\r"):
        line = line[:-1]
    nul = line.find(b"\0")
    if nul >= 0:
        line = line[:nul]
    verb, _, rest = line.partition(b" ")
    # bytes.upper() touches ASCII only: "quıt" must not become QUIT as str.upper() would.
    return CommandLine(decode(verb.upper()), decode(rest.lstrip(b" ")))


def parse_auth_argument(argument: str) -> tuple[str, str | None]:
    """``PLAIN dGVzdA==`` -> ``("PLAIN", "dGVzdA==")``; no response (or only spaces) -> None."""
    mechanism, _, rest = argument.partition(" ")
    response = rest.lstrip(" ")
    return _ascii_upper(mechanism), response or None


def parse_auth_line(line: bytes) -> str:
    """One line of an AUTH exchange (without its LF): one trailing CR goes, nothing else."""
    if line.endswith(b"\r"):
        line = line[:-1]
    return decode(line)


def parse_parameters(words: Iterable[str]) -> Parameters:
    """``KEY[=VALUE]`` words into a dict (keys upper-cased; a later duplicate wins)."""
    params: dict[str, str | None] = {}
    for word in words:
        key, eq, value = word.partition("=")
        params[_ascii_upper(key)] = value if eq else None
    body = params.get("BODY")
    return Parameters(params, parse_size(params.get("SIZE")), _ascii_upper(body) if body else None)


def parse_size(value: str | None) -> int | None:
    """RFC 1870 SIZE value: leading digits; none (or no value) means "not declared"."""
    if not value:
        return None
    end = 0
    while end < len(value) and "0" <= value[end] <= "9":
        end += 1
    if end == 0:
        return None
    if end > 20:
        return SIZE_CAP
    return min(int(value[:end]), SIZE_CAP)


def _ascii_upper(text: str) -> str:
    return decode(text.encode("utf-8", "surrogateescape").upper())
