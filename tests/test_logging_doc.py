"""docs/logging.md against the code, both ways: every event the code logs is documented
there, and every event documented there is logged somewhere in src/qtoaster.

An event is the first word of the format string of a ``log.<level>(...)`` call (both
branches of a conditional expression count); it must match core.logfields.EVENT.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from qtoaster.core.logfields import EVENT

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "qtoaster"
LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}
# A documented event: a table row opening with it in backticks.
DOC_ROW = re.compile(r"^\| `([a-z][a-z0-9_.-]*)` \|", re.MULTILINE)


def _literals(node: ast.expr) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        return _literals(node.body) + _literals(node.orelse)
    return []


def _is_log_call(node: ast.AST) -> bool:
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
        return False
    target = node.func.value
    name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
    return node.func.attr in LEVELS and name in ("log", "logger") and bool(node.args)


def logged_events() -> dict[str, list[str]]:
    """event -> where (``path:line``); a call without a literal event maps under ``?``."""
    found: dict[str, list[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not _is_log_call(node):
                continue
            assert isinstance(node, ast.Call)
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            texts = _literals(node.args[0])
            for text in texts or ["?"]:
                event = text.split(" ", 1)[0]
                found.setdefault(event if EVENT.match(event) else "?", []).append(where)
    return found


def documented_events() -> set[str]:
    return set(DOC_ROW.findall((ROOT / "docs" / "logging.md").read_text()))


def test_every_log_call_opens_with_an_event_name() -> None:
    assert logged_events().get("?", []) == []


def test_every_logged_event_is_documented() -> None:
    missing = {
        e: w for e, w in logged_events().items() if e != "?" and e not in documented_events()
    }
    assert missing == {}


def test_every_documented_event_is_logged() -> None:
    assert documented_events() - set(logged_events()) == set()
