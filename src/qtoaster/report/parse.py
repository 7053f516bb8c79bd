"""One log line (docs/logging.md) back into its parts; ``None`` for any other line.

``TIME ROLE[PID] LEVEL EVENT key=value ...``, or journald's export of it
(``<N>ROLE[PID] LEVEL ...`` with no time). A line this module cannot read is not an
error: the report counts it and goes on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from qtoaster.core.logfields import FieldError, parse_fields

_FRAME = re.compile(
    r"(?:(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?[+-]\d\d:\d\d) |<[0-7]>)"
    r"(?P<role>[^\s\[\]]+)\[(?P<pid>\d+)\] (?P<level>[A-Z]+) (?P<event>[a-z][a-z0-9_.-]*)"
    r"(?: (?P<rest>.*))?\Z"
)


@dataclass(frozen=True, slots=True)
class Line:
    time: datetime | None  # None under journald (no time in the line)
    role: str
    pid: int
    level: str
    event: str
    fields: dict[str, str]


def parse_line(text: str) -> Line | None:
    """The parts of ``text`` (no line ending), or None if it is not a structured line.

    An event whose rest is not ``key=value`` (an operational line in free text) comes
    back with empty fields."""
    match = _FRAME.match(text)
    if match is None:
        return None
    stamp = match["time"]
    try:
        when = datetime.fromisoformat(stamp) if stamp else None
    except ValueError:
        return None
    try:
        values = parse_fields(match["rest"] or "")
    except FieldError:
        values = {}
    return Line(when, match["role"], int(match["pid"]), match["level"], match["event"], values)
