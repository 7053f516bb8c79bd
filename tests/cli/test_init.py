"""``qtoaster init`` through click's CliRunner."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from qtoaster.cli.main import cli
from qtoaster.config.loader import load_config
from qtoaster.core.home import Home
from qtoaster.supervisor.check import check_config

pytest.importorskip("qtoaster.queue.store")
pytest.importorskip("qtoaster.directory.store")


def test_init_creates_home_and_prints_next_steps(tmp_path: Path) -> None:
    root = tmp_path / "home"
    result = CliRunner().invoke(cli, ["init", "--home", str(root), "--me", "mail.example.com"])
    assert result.exit_code == 0, result.output
    assert f"created {root}" in result.output
    assert "control/" in result.output and "tcp.smtp" in result.output
    assert "next steps:" in result.output
    assert f"qtoaster run --home {root}" in result.output
    assert check_config(Home(root)) == []


def test_init_quiet_omits_the_next_steps(tmp_path: Path) -> None:
    root = tmp_path / "home"
    args = ["init", "--quiet", "--home", str(root), "--me", "mail.example.com"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert f"created {root}" in result.output  # what was made is still said
    assert "next steps:" not in result.output and "qtoaster run" not in result.output
    assert check_config(Home(root)) == []


def test_demo_script_quiets_init() -> None:
    demo = (Path(__file__).parents[2] / "scripts" / "demo").read_text()
    assert "$Q init --quiet " in demo


def test_init_smtp_option_repeatable(tmp_path: Path) -> None:
    root = tmp_path / "home"
    args = ["init", "--home", str(root), "--me", "m.test"]
    args += ["--smtp", "127.0.0.1:2601", "--smtp", "[::1]:2601"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    listeners = load_config(Home(root)).settings.listeners
    assert [str(x) for x in listeners] == ["127.0.0.1:2601", "[::1]:2601"]


def test_init_refuses_existing_home(tmp_path: Path) -> None:
    root = tmp_path / "home"
    root.mkdir()
    (root / "qtoaster.toml").write_text("")
    result = CliRunner().invoke(cli, ["init", "--home", str(root), "--me", "m.test"])
    assert result.exit_code == 1
    assert "already exists" in result.output
    assert [p.name for p in root.iterdir()] == ["qtoaster.toml"]


def test_init_requires_me(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["init", "--home", str(tmp_path / "home")])
    assert result.exit_code == 2
    assert "--me HOST is required" in result.output
    assert not (tmp_path / "home").exists()


def test_init_bad_smtp_address(tmp_path: Path) -> None:
    root = tmp_path / "home"
    args = ["init", "--home", str(root), "--me", "m.test", "--smtp", "::1:25"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert "brackets" in result.output
    assert not root.exists()
