"""POSIX extended regular expressions (regcomp REG_EXTENDED|REG_ICASE) -> `regex` syntax.

qregex (spec 8) compiles each control-file line with glibc's regcomp in the C locale.
Python's syntax differs, so :func:`translate` parses the ERE and re-emits it with every
literal escaped, following what glibc accepts and rejects (checked against glibc 2.36's
regcomp; the messages are glibc's regerror texts):

- a quantifier (``*+?{``) with nothing to repeat (at the start, after ``(``, ``|`` or an
  anchor) is an error; stacked quantifiers (``a**``, ``a+?``) repeat the repetition, never
  Python's lazy or possessive forms; ``{`` must open a valid interval ``{n}``, ``{n,}``,
  ``{n,m}``, ``{,m}`` (bounds <= RE_DUP_MAX 32767); a lone ``}`` or ``)`` is literal;
- bracket expressions: ``]`` first is literal, ``\\`` inside is literal, ``[:class:]``
  (C-locale ASCII sets), ``[=c=]`` and ``[.c.]``, ranges (reversed = error), ``-`` literal
  first or last;
- backslash: GNU's ``\\w \\W \\s \\S \\b \\B \\< \\> \\` \\'`` and back references
  ``\\1``-``\\9`` to a closed group; any other escaped character is that character (glibc
  under REG_ICASE makes an escaped lower-case letter match nothing, a bug not kept);
- ``.`` and negated brackets match a newline (no REG_NEWLINE); ``$`` is the very end.

Compile the result with :data:`FLAGS`.  Matching is a search: only whether a match exists
counts, so POSIX's leftmost-longest rule needs no emulation.

Invariant: `translate` returns a pattern the `regex` module compiles, or raises EreError.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import regex

from qtoaster.core.errors import FormatError

# C locale, case-insensitive, "." matches newline: regcomp(REG_EXTENDED | REG_ICASE).
FLAGS = regex.IGNORECASE | regex.DOTALL | regex.ASCII
RE_DUP_MAX = 0x7FFF  # glibc's limit on interval bounds
# `regex` unrolls bounded repeats when compiling: "(a{1000}){1000}" costs seconds and
# "(a{9999}){9999}" all memory.  A pattern whose unrolled size would exceed this is refused
# as glibc refuses over-large ones (REG_ESIZE), so no control line can exhaust the server.
MAX_SIZE = 50_000

_PUNCT = "!-/:-@\\[-`{-~"
# POSIX character classes in the C locale (ctype.h on ASCII), as Python set contents.
CLASSES = {
    "alpha": "a-zA-Z",
    "digit": "0-9",
    "alnum": "0-9a-zA-Z",
    "upper": "A-Z",
    "lower": "a-z",
    "space": " \\t\\n\\r\\f\\v",
    "blank": " \\t",
    "punct": _PUNCT,
    "print": " -~",
    "graph": "!-~",
    "cntrl": "\\x00-\\x1f\\x7f",
    "xdigit": "0-9A-Fa-f",
}
_GNU_ESCAPES = {
    "w": ("\\w", True),
    "W": ("\\W", True),
    "s": ("\\s", True),
    "S": ("\\S", True),
    "b": ("\\b", False),
    "B": ("\\B", False),
    "<": ("\\b(?=\\w)", False),
    ">": ("\\b(?<=\\w)", False),
    "`": ("\\A", False),
    "'": ("\\Z", False),
}
_INTERVAL = re.compile(r"([0-9]*)(?:(,)([0-9]*))?")

UNMATCHED_BRACKET = "Unmatched [, [^, [:, [., or [="
UNMATCHED_PAREN = "Unmatched ( or \\("
UNMATCHED_BRACE = "Unmatched \\{"
BAD_INTERVAL = "Invalid content of \\{\\}"
BAD_PRECEDING = "Invalid preceding regular expression"
BAD_RANGE = "Invalid range end"
BAD_CLASS = "Invalid character class name"
BAD_COLLATION = "Invalid collation character"
BAD_BACKREF = "Invalid back reference"
TRAILING_BACKSLASH = "Trailing backslash"
TOO_BIG = "Regular expression too big"


class EreError(FormatError, ValueError):
    """The pattern is not a valid POSIX ERE (regcomp would fail); the text says why."""


@dataclass
class _Level:
    """One nesting level: its items, and whether the last one may take a quantifier."""

    items: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)  # unrolled size of each item
    group: int = 0  # capturing group number of this level (0: the top level)
    can_repeat: bool = False
    quantified: bool = False

    def atom(self, text: str, repeatable: bool = True, size: int = 1) -> None:
        self.items.append(text)
        self.sizes.append(size)
        self.can_repeat = repeatable
        self.quantified = False

    def repeat(self, quantifier: str, times: int = 1) -> None:
        if not self.can_repeat:
            raise EreError(BAD_PRECEDING)
        self.sizes[-1] *= max(times, 1)
        if self.sizes[-1] > MAX_SIZE:
            raise EreError(TOO_BIG)
        last = self.items[-1]
        # POSIX "a**" repeats "a*"; in Python "a*?" would be lazy and "a*+" possessive.
        self.items[-1] = f"(?:{last}){quantifier}" if self.quantified else last + quantifier
        self.quantified = True


def translate(pattern: str) -> str:
    """*pattern* (a POSIX ERE) in the `regex` module's syntax; EreError if invalid."""
    return _Translator(pattern).run()


def compile_ere(pattern: str) -> regex.Pattern[str]:
    """The compiled, case-insensitive form of *pattern*; EreError if it does not compile."""
    try:
        return regex.compile(translate(pattern), FLAGS)
    except (regex.error, OverflowError, RecursionError) as exc:  # a limit of the engine
        raise EreError(str(exc)) from exc


class _Translator:
    def __init__(self, pattern: str) -> None:
        self.src = pattern
        self.pos = 0
        self.levels = [_Level()]
        self.groups = 0
        self.closed: set[int] = set()

    def run(self) -> str:
        while self.pos < len(self.src):
            char = self.src[self.pos]
            self.pos += 1
            self._token(char)
        if len(self.levels) > 1:
            raise EreError(UNMATCHED_PAREN)
        if sum(self.levels[0].sizes) > MAX_SIZE:
            raise EreError(TOO_BIG)
        return "".join(self.levels[0].items)

    def _token(self, char: str) -> None:
        level = self.levels[-1]
        if char == "\\":
            self._escape(level)
        elif char == "(":
            self.groups += 1
            self.levels.append(_Level(group=self.groups))
        elif char == ")" and len(self.levels) > 1:
            inner = self.levels.pop()
            self.closed.add(inner.group)
            size = sum(inner.sizes) + 1
            self.levels[-1].atom("(" + "".join(inner.items) + ")", size=size)
        elif char == "|":
            level.atom("|", repeatable=False)
        elif char == "^":
            level.atom("^", repeatable=False)
        elif char == "$":
            level.atom("\\Z", repeatable=False)
        elif char == ".":
            level.atom(".")
        elif char == "[":
            level.atom(self._bracket())
        elif char in "*+?":
            level.repeat(char)
        elif char == "{":
            if not level.can_repeat:
                raise EreError(BAD_PRECEDING)
            level.repeat(*self._interval())
        else:
            level.atom(regex.escape(char))

    def _escape(self, level: _Level) -> None:
        if self.pos >= len(self.src):
            raise EreError(TRAILING_BACKSLASH)
        char = self.src[self.pos]
        self.pos += 1
        if char in _GNU_ESCAPES:
            text, repeatable = _GNU_ESCAPES[char]
            level.atom(text, repeatable)
        elif "1" <= char <= "9":
            if int(char) not in self.closed:
                raise EreError(BAD_BACKREF)
            level.atom(f"(?:\\{char})")
        else:
            level.atom(regex.escape(char))

    def _interval(self) -> tuple[str, int]:
        """The quantifier after ``{`` and its largest bound."""
        end = self.src.find("}", self.pos)
        if end < 0:
            raise EreError(UNMATCHED_BRACE)
        body = self.src[self.pos : end]
        self.pos = end + 1
        found = _INTERVAL.fullmatch(body)
        if not body or found is None:
            raise EreError(BAD_INTERVAL)
        low_text, comma, high_text = found.groups()
        low = int(low_text) if low_text else 0
        high = int(high_text) if high_text else None
        if not comma:
            high = low
        if low > RE_DUP_MAX or (high is not None and high > RE_DUP_MAX):
            raise EreError(TOO_BIG)
        if high is not None and low > high:
            raise EreError(BAD_INTERVAL)
        if high is None:
            return f"{{{low},}}", low
        return (f"{{{low}}}" if low == high else f"{{{low},{high}}}"), high

    # -- bracket expressions -------------------------------------------------------

    def _bracket(self) -> str:
        """``[...]`` from just after the ``[``, as a Python set (every member escaped)."""
        src = self.src
        negate = self._peek() == "^"
        if negate:
            self.pos += 1
        parts: list[str] = []
        first = True
        while True:
            if self.pos >= len(src):
                raise EreError(UNMATCHED_BRACKET)
            if src[self.pos] == "]" and not first:
                self.pos += 1
                break
            first = False
            kind, text = self._element()
            if self._peek() == "-" and self._peek(1) not in ("]", ""):
                self.pos += 1
                parts.append(self._range(kind, text))
                if self._peek() == "-" and self._peek(1) not in ("]", ""):
                    raise EreError(BAD_RANGE)  # glibc: "[a-z-9]"
            else:
                parts.append(text if kind == "class" else _set_escape(text))
        return "[" + ("^" if negate else "") + "".join(parts) + "]"

    def _range(self, kind: str, start: str) -> str:
        end_kind, end = self._element()
        if kind != "char" or end_kind != "char" or ord(start) > ord(end):
            raise EreError(BAD_RANGE)
        return _set_escape(start) + "-" + _set_escape(end)

    def _element(self) -> tuple[str, str]:
        """One bracket member: ("char", c) or ("class", set contents)."""
        src = self.src
        char = src[self.pos]
        opener = self._peek(1)
        if char == "[" and opener in (":", "=", "."):
            close = src.find(opener + "]", self.pos + 2)
            if close < 0:
                raise EreError(UNMATCHED_BRACKET)
            name = src[self.pos + 2 : close]
            self.pos = close + 2
            if opener == ":":
                if name not in CLASSES:
                    raise EreError(BAD_CLASS)
                return "class", CLASSES[name]
            if len(name) != 1:
                raise EreError(BAD_COLLATION)
            # [=c=] is c's equivalence class: just c in the C locale; [.c.] is c.
            return ("char" if opener == "." else "equiv"), name
        self.pos += 1
        return "char", char

    def _peek(self, ahead: int = 0) -> str:
        index = self.pos + ahead
        return self.src[index] if index < len(self.src) else ""


def _set_escape(char: str) -> str:
    """*char* as a literal member of a Python set."""
    return "\\" + char if char in "\\]^-[" else regex.escape(char)
