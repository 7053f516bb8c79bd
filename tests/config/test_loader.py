"""load_config / check_config: all three sources, every problem in one report."""

from __future__ import annotations

from pathlib import Path

import pytest

from qtoaster.config.loader import Config, load_config
from qtoaster.core.errors import ConfigError
from qtoaster.core.home import Home
from qtoaster.supervisor.check import check_config
from qtoaster.tls.certs import self_signed, write_private


def make_home(root: Path) -> Home:
    home = Home(root)
    home.control.mkdir(parents=True)
    (home.control / "me").write_text("mx.example.com\n")
    (home.control / "rcpthosts").write_text("example.com\n")
    home.settings_file.write_text('[listen]\nsmtp = ["127.0.0.1:2525"]\n[queue]\nfsync = false\n')
    home.tcp_smtp.write_text('127.:allow,RELAYCLIENT=""\n:allow\n')
    # qtoaster init writes a certificate; a home without one fails the check
    write_private(home.control / "servercert.pem", self_signed("mx.example.com"))
    return home


def test_load_config(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home")
    config = load_config(home)
    assert isinstance(config, Config)
    assert config.home == home
    assert config.settings.fsync is False
    assert config.controls.me == "mx.example.com"
    assert config.controls.rcpthosts_allows("example.com")
    assert config.tcp_smtp.match("127.0.0.1").env == {"RELAYCLIENT": ""}
    assert check_config(home) == []


def test_missing_tcp_smtp_allows_all(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home")
    home.tcp_smtp.unlink()
    assert load_config(home).tcp_smtp.match("192.0.2.1").allow


def test_problems_of_all_sources_in_one_error(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home")
    (home.control / "me").unlink()
    (home.control / "databytes").write_text("lots\n")
    home.settings_file.write_text("[smtpd]\nworkers = -1\n[log]\nlevel = 3\n")
    home.tcp_smtp.write_text("127.:allow\nbogus\n")
    with pytest.raises(ConfigError) as info:
        load_config(home)
    problems = info.value.problems
    assert len(problems) == 5, problems
    assert problems == check_config(home)
    assert problems[0].startswith("qtoaster.toml: [smtpd] workers")
    assert problems[1].startswith("qtoaster.toml: [log] level")
    assert problems[2].startswith("control/me: missing")
    assert problems[3].startswith("control/databytes: 'lots'")
    assert problems[4].startswith("tcp.smtp:2: ")


def test_no_home(tmp_path: Path) -> None:
    problems = check_config(Home(tmp_path / "nothing"))
    assert len(problems) == 1 and "qtoaster init" in problems[0]


def test_empty_home_reports_each_missing_part(tmp_path: Path) -> None:
    problems = check_config(Home(tmp_path))
    assert len(problems) == 2
    assert "qtoaster.toml: missing" in problems[0]
    assert "control directory missing" in problems[1]
