"""Typed reading of qtoaster.toml's tables: :class:`Tables` records every problem instead
of raising, and the value checks the settings modules share (``config/settings.py``,
``config/mailsettings.py``).

Invariant: a check returns None for a good value or the problem's text (``must be ...``);
it never raises and never converts.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any


class Tables:
    """Typed access to the parsed TOML that records problems instead of raising."""

    def __init__(self, data: dict[str, Any], source: str) -> None:
        self.data = data
        self.source = source
        self.problems: list[str] = []
        self.known: dict[str, set[str]] = {}

    def get(self, table: str, key: str, check: Callable[[Any], str | None], default: Any) -> Any:
        self.known.setdefault(table, set()).add(key)
        section = self.data.get(table, {})
        if not isinstance(section, dict) or key not in section:
            return default
        value = section[key]
        problem = check(value)
        if problem:
            self.problems.append(f"{self.source}: [{table}] {key}: {problem}, not {value!r}")
            return default
        return value

    def unknown(self) -> None:
        for table, section in self.data.items():
            if not isinstance(section, dict):
                self.problems.append(
                    f"{self.source}: {table} = {section!r} is not inside a table "
                    f"(settings go under [{'], ['.join(self.known)}])"
                )
            elif table not in self.known:
                self.problems.append(f"{self.source}: unknown table [{table}]")
            else:
                for key in section:
                    if key not in self.known[table]:
                        self.problems.append(f"{self.source}: [{table}] unknown key {key!r}")


def int_between(low: int, high: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        # bool is an int subclass in Python; TOML true is not a number.
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            return f"must be an integer from {low} to {high}"
        return None

    return check


def is_bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def seconds_between(low: float, high: float) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and low <= value <= high:
            return None
        return f"must be a number of seconds from {low:g} to {high:g}"

    return check


def choice(choices: type[StrEnum]) -> Callable[[Any], str | None]:
    """A check for one of *choices*' values: two read ``"a" or "b"``, more ``one of a, b, c``."""
    values = [member.value for member in choices]
    if len(values) == 2:
        problem = f'must be "{values[0]}" or "{values[1]}"'
    else:
        problem = f"must be one of {', '.join(values)}"

    def check(value: Any) -> str | None:
        return None if isinstance(value, str) and value in values else problem

    return check


def is_table(value: Any) -> str | None:
    return None if isinstance(value, dict) else "must be a table"


def is_list(value: Any) -> str | None:
    ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    return None if ok else 'must be a list of "HOST:PORT" strings'
