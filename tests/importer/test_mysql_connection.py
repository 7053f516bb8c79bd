"""``--mysql URL`` against a real MariaDB (tests/importer/conftest.py)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from qtoaster.cli.importer import import_group
from qtoaster.core.home import Home
from qtoaster.directory.store import Directory, create_directory

from .tree import BOB_PW, build


def test_import_over_connection(tmp_path: Path, mariadb_port: int) -> None:
    source = build(tmp_path)
    for vpasswd in (source / "domains").glob("*/vpasswd"):
        vpasswd.unlink()
    home = Home(tmp_path / "home")
    create_directory(home)
    url = f"mysql://root@127.0.0.1:{mariadb_port}/vpopmail"
    result = CliRunner().invoke(
        import_group, ["vpopmail", "--home", str(home.root), str(source), "--mysql", url]
    )
    assert result.exit_code == 1, result.output  # the program alias 'prog'
    assert "error: alias prog@example.com (valias)" in result.output
    directory = Directory.open(home)
    try:
        assert {u.address for u in directory.users()} == {
            "alice@example.com",
            "bob@example.com",
            "carol@example.com",
            "postmaster@example.com",
            "dave@example.org",
            "erin@example.org",
        }
        assert directory.verify_password("erin@example.org", BOB_PW)
        assert {a.target for a in directory.aliases() if a.address == "help@example.com"} == {
            "alice@example.com",
            "bob@example.com",
        }
    finally:
        directory.close()


def test_connection_refused_exits_one(tmp_path: Path) -> None:
    source = build(tmp_path)
    result = CliRunner().invoke(
        import_group, ["vpopmail", str(source), "--mysql", "mysql://root@127.0.0.1:1/vpopmail"]
    )
    assert result.exit_code == 1 and "cannot connect to MySQL" in result.output
