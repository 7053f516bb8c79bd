"""``qtoaster import vpopmail``: dry run, apply, exit statuses, control/rcpthosts."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from qtoaster.cli.importer import import_group
from qtoaster.core.home import Home
from qtoaster.directory.store import Directory, create_directory

from .tree import build, dump_text


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(import_group, ["vpopmail", *args])
    return result.exit_code, result.output


def test_dry_run_then_import(tmp_path: Path) -> None:
    source = build(tmp_path)
    home = Home(tmp_path / "home")
    create_directory(home)
    code, out = _run("--home", str(home.root), str(source), "--dry-run")
    assert code == 1 and "dry run: nothing was changed" in out  # the program alias
    assert "error: alias list@example.com" in out and not (home.control / "rcpthosts").exists()
    code, out = _run("--home", str(home.root), str(source))
    assert code == 1
    assert "example.com (new): imported 4 users, 3 aliases, 1 alias domains, 4 messages" in out
    rcpthosts = (home.control / "rcpthosts").read_text().split()
    assert sorted(rcpthosts) == ["example.com", "example.net", "example.org"]
    directory = Directory.open(home)
    try:
        assert directory.user("dave@example.org") is not None
    finally:
        directory.close()


def test_clean_domain_exits_zero_and_reruns(tmp_path: Path) -> None:
    source = build(tmp_path)
    home = Home(tmp_path / "home")
    create_directory(home)
    args = ("--home", str(home.root), str(source), "--domain", "example.org")
    assert _run(*args)[0] == 0
    code, out = _run(*args)
    assert code == 0 and "skipped: user dave@example.org: exists" in out


def test_dump_and_no_mail(tmp_path: Path) -> None:
    source = build(tmp_path)
    dump = tmp_path / "dump.sql"
    dump.write_text(dump_text())
    home = Home(tmp_path / "home")
    create_directory(home)
    code, out = _run("--home", str(home.root), str(source), "--mysql-dump", str(dump), "--no-mail")
    assert code == 1 and "prog@example.com" in out
    assert not any(home.maildir("example.com", "alice").glob("cur/*"))


def test_bad_usage_exits_two(tmp_path: Path) -> None:
    source = build(tmp_path)
    assert _run(str(tmp_path / "nowhere"))[0] == 2
    both = ("--mysql-dump", str(tmp_path / "x"), "--mysql", "mysql://u@h/db")
    assert _run(str(source), *both)[0] == 2
    assert _run(str(source), "--assign", str(tmp_path / "missing"))[0] == 2


def test_broken_dump_exits_one(tmp_path: Path) -> None:
    source = build(tmp_path)
    dump = tmp_path / "dump.sql"
    dump.write_text("INSERT INTO `vpopmail` VALUES ('unterminated);\n")
    code, out = _run("--home", str(tmp_path / "home"), str(source), "--mysql-dump", str(dump))
    assert code == 1 and "unterminated string" in out
