"""Read table rows out of ``mysqldump`` text, without a SQL server.

Understands what mysqldump writes and what people write by hand in the same style:
``CREATE TABLE `t` (`col` ...)`` (for the column names), ``INSERT [IGNORE] INTO `t`
[(`c1`, ...)] VALUES (...), (...);`` and ``REPLACE INTO``; MySQL string literals in single
or double quotes with backslash escapes and doubled quotes (MySQL reference manual, 11.1.1
"String Literals"), ``NULL``, numbers, ``0x`` hex and ``_charset'...'`` introducers.
Comments (``-- ``, ``#``, ``/* */`` including mysqldump's ``/*!40101 ... */``) and every other
statement are skipped.

Invariants: pure text in, values out (no I/O); any malformed input raises
:class:`DumpError` (never another exception); text is decoded by the caller, bytes in hex
literals become ``str`` with surrogate escapes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from qtoaster.core.errors import FormatError

Value = str | int | float | None

# MySQL 11.1.1 table 11.1: the special character escape sequences; any other \x is x.
_ESCAPES = {"0": "\0", "b": "\b", "n": "\n", "r": "\r", "t": "\t", "Z": "\x1a"}
_IDENT = re.compile(r"`((?:[^`]|``)*)`|([A-Za-z0-9_$]+)")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_HEX = re.compile(r"0x([0-9A-Fa-f]*)|[xX]'([0-9A-Fa-f]*)'")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INSERT = re.compile(
    r"(?:INSERT(?:\s+(?:LOW_PRIORITY|DELAYED|HIGH_PRIORITY|IGNORE))*|REPLACE)"
    r"(?:\s+INTO)?\s+",
    re.IGNORECASE,
)
_CREATE = re.compile(r"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?", re.IGNORECASE)


class DumpError(FormatError, ValueError):
    """The dump text cannot be read; the message says where."""


@dataclass(slots=True)
class DumpTable:
    name: str
    columns: list[str] = field(default_factory=list)  # from CREATE TABLE, if seen
    rows: list[dict[str, Value]] = field(default_factory=list)


class _Cursor:
    """A position in the text with the token readers the grammar needs."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, what: str) -> DumpError:
        line = self.text.count("\n", 0, self.pos) + 1
        return DumpError(f"mysqldump line {line}: {what}")

    def skip_space(self) -> None:
        text, n = self.text, len(self.text)
        while self.pos < n:
            ch = text[self.pos]
            if ch.isspace():
                self.pos += 1
            elif ch == "#" or text.startswith("-- ", self.pos) or text.startswith("--\n", self.pos):
                end = text.find("\n", self.pos)
                self.pos = n if end < 0 else end + 1
            elif text.startswith("/*", self.pos):
                end = text.find("*/", self.pos + 2)
                if end < 0:
                    raise self.error("unterminated comment")
                self.pos = end + 2
            else:
                return

    def peek(self) -> str:
        self.skip_space()
        return self.text[self.pos : self.pos + 1]

    def expect(self, ch: str) -> None:
        if self.peek() != ch:
            raise self.error(f"expected {ch!r}")
        self.pos += 1

    def match(self, pattern: re.Pattern[str]) -> re.Match[str] | None:
        self.skip_space()
        found = pattern.match(self.text, self.pos)
        if found is not None:
            self.pos = found.end()
        return found

    def identifier(self) -> str:
        found = self.match(_IDENT)
        if found is None:
            raise self.error("expected a name")
        if found.group(1) is not None:
            return found.group(1).replace("``", "`")
        return found.group(2)

    def qualified_name(self) -> str:
        """``db.table`` or ``table``: the table's own name."""
        name = self.identifier()
        while self.peek() == ".":
            self.pos += 1
            name = self.identifier()
        return name

    def string(self) -> str:
        quote = self.text[self.pos]
        out: list[str] = []
        i, text, n = self.pos + 1, self.text, len(self.text)
        while i < n:
            ch = text[i]
            if ch == "\\" and i + 1 < n:
                out.append(_ESCAPES.get(text[i + 1], text[i + 1]))
                i += 2
            elif ch == quote:
                if text.startswith(quote, i + 1):  # '' inside '...' is one quote
                    out.append(quote)
                    i += 2
                    continue
                self.pos = i + 1
                return "".join(out)
            else:
                out.append(ch)
                i += 1
        raise self.error("unterminated string")

    def skip_statement(self) -> None:
        """Past the next ``;`` outside strings, identifiers and comments (or to the end)."""
        while self.pos < len(self.text):
            self.skip_space()
            if self.pos >= len(self.text):
                return
            ch = self.text[self.pos]
            if ch in "'\"":
                self.string()
            elif ch == "`":
                self.identifier()
            elif ch == ";":
                self.pos += 1
                return
            else:
                self.pos += 1


def _value(cur: _Cursor) -> Value:
    ch = cur.peek()
    if ch in ("'", '"'):
        return cur.string()
    if (hexed := cur.match(_HEX)) is not None:
        digits = hexed.group(1) if hexed.group(1) is not None else hexed.group(2)
        if len(digits) % 2:
            digits = "0" + digits
        return bytes.fromhex(digits).decode("utf-8", "surrogateescape")
    if (number := cur.match(_NUMBER)) is not None:
        text = number.group(0)
        return int(text) if text.lstrip("+-").isdigit() else float(text)
    word = cur.match(_WORD)
    if word is None:
        raise cur.error("expected a value")
    if word.group(0).upper() == "NULL":
        return None
    if word.group(0).startswith("_") and cur.peek() in ("'", '"'):  # _utf8mb4'...'
        return cur.string()
    if word.group(0).upper() in ("TRUE", "FALSE"):
        return int(word.group(0).upper() == "TRUE")
    raise cur.error(f"unexpected {word.group(0)!r}")


def _row(cur: _Cursor) -> list[Value]:
    cur.expect("(")
    values = [_value(cur)]
    while cur.peek() == ",":
        cur.pos += 1
        values.append(_value(cur))
    cur.expect(")")
    return values


def _column_list(cur: _Cursor) -> list[str]:
    cur.expect("(")
    names = [cur.identifier()]
    while cur.peek() == ",":
        cur.pos += 1
        names.append(cur.identifier())
    cur.expect(")")
    return names


_NOT_COLUMNS = {
    "PRIMARY",
    "KEY",
    "INDEX",
    "UNIQUE",
    "CONSTRAINT",
    "FOREIGN",
    "FULLTEXT",
    "SPATIAL",
    "CHECK",
    "PERIOD",
}


def _create(cur: _Cursor, tables: dict[str, DumpTable]) -> None:
    """CREATE TABLE: remember the column names (the items that are not keys or checks)."""
    name = cur.qualified_name()
    table = tables.setdefault(name, DumpTable(name))
    if cur.peek() != "(":  # CREATE TABLE t LIKE u, ... AS SELECT: no column list
        cur.skip_statement()
        return
    cur.pos += 1
    columns: list[str] = []
    while cur.peek() not in (")", ""):
        first = cur.identifier()
        if cur.text[cur.pos - 1] == "`" or first.upper() not in _NOT_COLUMNS:
            columns.append(first)
        _skip_item(cur)
    cur.expect(")")
    table.columns = columns
    cur.skip_statement()  # ENGINE=... DEFAULT CHARSET=...;


def _skip_item(cur: _Cursor) -> None:
    """Past the rest of one column or key definition, up to its ``,`` or the closing ``)``."""
    depth = 0
    while True:
        ch = cur.peek()
        if ch == "":
            raise cur.error("unterminated CREATE TABLE")
        if ch in "'\"":
            cur.string()
        elif ch == "`":
            cur.identifier()
        elif ch == "(":
            depth += 1
            cur.pos += 1
        elif ch == ")" and depth == 0:
            return
        elif ch == ")":
            depth -= 1
            cur.pos += 1
        elif ch == "," and depth == 0:
            cur.pos += 1
            return
        else:
            cur.pos += 1


def _insert(cur: _Cursor, tables: dict[str, DumpTable]) -> None:
    name = cur.qualified_name()
    table = tables.setdefault(name, DumpTable(name))
    columns = _column_list(cur) if cur.peek() == "(" else table.columns
    keyword = cur.match(_WORD)
    if keyword is None or keyword.group(0).upper() not in ("VALUES", "VALUE"):
        raise cur.error("expected VALUES")
    while True:
        values = _row(cur)
        if len(values) != len(columns):
            raise cur.error(f"{len(values)} values for the {len(columns)} columns of {name}")
        table.rows.append(dict(zip(columns, values, strict=True)))
        if cur.peek() != ",":
            break
        cur.pos += 1
    if cur.peek() not in (";", ""):
        cur.skip_statement()  # ON DUPLICATE KEY UPDATE ...: not ours to apply
    elif cur.peek() == ";":
        cur.pos += 1


def parse_dump(text: str) -> dict[str, DumpTable]:
    """Every table the dump creates or inserts into, with its rows in dump order."""
    cur = _Cursor(text)
    tables: dict[str, DumpTable] = {}
    while True:
        cur.skip_space()
        if cur.pos >= len(text):
            return tables
        if cur.match(_CREATE) is not None:
            _create(cur, tables)
        elif cur.match(_INSERT) is not None:
            _insert(cur, tables)
        else:
            cur.skip_statement()
