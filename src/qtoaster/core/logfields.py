"""The ``key=value`` part of a log line (docs/logging.md): written here, read back here.

A line's message is ``EVENT key=value key=value ...``. A value is written bare when it
is non-empty, printable and holds no space, ``"`` or ``=``; otherwise it is written in
double quotes with backslash escapes (``\\\\``, ``\\"``, ``\\n``, ``\\r``, ``\\t``,
``\\xNN``, ``\\uNNNN``, ``\\UNNNNNNNN``), so no CR or LF ever reaches a line and
:func:`parse_fields` gives back exactly the value written (tests/core/test_logfields.py,
a hypothesis round trip). A bare value's backslashes are literal.

Formatting is on smtpd's and send's hot path: the common value (a bare word) costs a
``str`` check and no copy.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from qtoaster.core.errors import FormatError

_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_UNESCAPES = {"\\": "\\", '"': '"', "n": "\n", "r": "\r", "t": "\t"}
_HEX_WIDTH = {"x": 2, "u": 4, "U": 8}
EVENT = re.compile(r"[a-z][a-z0-9_.-]*\Z")
KEY = re.compile(r"[a-z_][a-z0-9_]*\Z")


def _escape(char: str) -> str:
    if char in _ESCAPES:
        return _ESCAPES[char]
    if char == " " or char.isprintable():
        return char
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


_bare = re.compile(r'[^ "=]+').fullmatch


def quote(value: object) -> str:
    """``value`` as a field value: bare if it can be, else quoted and escaped."""
    text = value if type(value) is str else str(value)
    if text.isprintable() and _bare(text):
        return text
    return '"' + "".join(map(_escape, text)) + '"'


def fields(**values: object) -> str:
    """``key=value ...`` in the order given; a ``None`` value is left out."""
    parts = []
    for key, value in values.items():
        if value is None:
            continue
        text = value if type(value) is str else str(value)
        if text.isprintable() and _bare(text):
            parts.append(f"{key}={text}")
        else:
            parts.append(f"{key}={quote(text)}")
    return " ".join(parts)


def reply_text(code: int, text: str) -> str:
    """An SMTP reply as one line of text: ``550 5.1.1 sorry`` (lines joined by `` / ``)."""
    lines = text.replace("\r", "").split("\n")
    return f"{code} {' / '.join(lines)}"


class FieldError(FormatError, ValueError):
    """A ``key=value`` text that this module did not write."""


def _unquote(text: str, start: int) -> tuple[str, int]:
    """The quoted value opening at ``text[start] == '"'``; returns it and the end index."""
    out: list[str] = []
    i = start + 1
    while i < len(text):
        char = text[i]
        if char == '"':
            return "".join(out), i + 1
        if char != "\\":
            out.append(char)
            i += 1
            continue
        kind = text[i + 1 : i + 2]
        if kind in _UNESCAPES:
            out.append(_UNESCAPES[kind])
            i += 2
        elif kind in _HEX_WIDTH:
            digits = text[i + 2 : i + 2 + _HEX_WIDTH[kind]]
            if len(digits) != _HEX_WIDTH[kind] or not all(
                c in "0123456789abcdefABCDEF" for c in digits
            ):
                raise FieldError(f"bad escape at {i}")
            code = int(digits, 16)
            if code > 0x10FFFF:
                raise FieldError(f"bad escape at {i}")
            out.append(chr(code))
            i += 2 + len(digits)
        else:
            raise FieldError(f"bad escape at {i}")
    raise FieldError("unterminated quote")


def iter_fields(text: str) -> Iterator[tuple[str, str]]:
    """The ``(key, value)`` pairs of ``key=value ...``; :class:`FieldError` if malformed."""
    i = 0
    n = len(text)
    while i < n:
        if text[i] == " ":
            i += 1
            continue
        eq = text.find("=", i)
        space = text.find(" ", i)
        if eq < 0 or (0 <= space < eq):
            raise FieldError(f"no '=' in the field at {i}")
        key = text[i:eq]
        if not KEY.match(key):
            raise FieldError(f"bad key {key!r}")
        if text[eq + 1 : eq + 2] == '"':
            value, i = _unquote(text, eq + 1)
            if i < n and text[i] != " ":
                raise FieldError(f"text after a quoted value at {i}")
        else:
            end = text.find(" ", eq + 1)
            end = n if end < 0 else end
            value, i = text[eq + 1 : end], end
        yield key, value


def parse_fields(text: str) -> dict[str, str]:
    """``key=value ...`` back into a dict (a repeated key: the last value)."""
    return dict(iter_fields(text))
