"""Protocol engines are sans-IO: nothing under qtoaster/protocols imports an I/O module."""

from __future__ import annotations

import ast
from pathlib import Path

import qtoaster.protocols

FORBIDDEN = {"asyncio", "socket", "ssl", "os", "time", "selectors", "threading", "subprocess"}
ROOT = Path(qtoaster.protocols.__file__).parent


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            names.update(
                a.value
                for a in node.args[:1]
                if isinstance(a, ast.Constant) and isinstance(a.value, str)
            )
    return {str(name).split(".")[0] for name in names}


def test_protocol_modules_import_no_io() -> None:
    files = sorted(ROOT.rglob("*.py"))
    assert any(f.name == "server.py" for f in files)
    offenders = {str(f.relative_to(ROOT)): sorted(imported_modules(f) & FORBIDDEN) for f in files}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_walk_catches_an_offender(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import os.path\nfrom asyncio import sleep\n__import__('socket')\n")
    assert imported_modules(bad) >= {"os", "asyncio", "socket"}
