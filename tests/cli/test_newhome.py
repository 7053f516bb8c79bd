"""init_home: a complete, valid home with qmail's defaults; never overwrites."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from qtoaster.cli.newhome import init_home
from qtoaster.config.control import Controls, load_controls
from qtoaster.config.loader import load_config
from qtoaster.config.settings import Listener
from qtoaster.core.errors import ConfigError
from qtoaster.core.home import Home
from qtoaster.supervisor.check import check_config

pytest.importorskip("qtoaster.queue.store")
pytest.importorskip("qtoaster.directory.store")


def test_creates_valid_home(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    init_home(home, "mail.example.com", as_root=False)
    assert check_config(home) == []
    config = load_config(home)
    assert config.settings.listeners == (Listener("smtp", "127.0.0.1", 2525),)
    assert config.settings.fsync is True and config.settings.log_level == "info"
    for path in (home.control, home.domains, home.run_dir, home.queue):
        assert path.is_dir()
    assert home.database.exists()
    assert not list(tmp_path.glob(".home.init-*"))


def test_root_gets_the_standard_ports(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    init_home(home, "mail.example.com", as_root=True)
    assert load_config(home).settings.listeners == (
        Listener("smtp", "0.0.0.0", 25),
        Listener("submission", "0.0.0.0", 587),
        Listener("smtps", "0.0.0.0", 465),
        Listener("pop3", "0.0.0.0", 110),
        Listener("pop3s", "0.0.0.0", 995),
    )


def test_given_listeners_replace_the_defaults(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    init_home(home, "mail.example.com", smtps=["127.0.0.1:4465"], as_root=True)
    assert load_config(home).settings.listeners == (Listener("smtps", "127.0.0.1", 4465),)


def test_control_files_hold_qmail_defaults(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    init_home(home, "mail.example.com")
    controls = load_controls(home.control)
    expected = Controls.for_me(
        "mail.example.com",
        rcpthosts=frozenset({"mail.example.com"}),
        locals=frozenset({"mail.example.com", "localhost"}),
        databytes=50_000_000,
    )
    assert controls == expected
    names = {p.name for p in home.control.iterdir()}
    assert names == {
        "me",
        "rcpthosts",
        "locals",
        "defaultdomain",
        "smtpgreeting",
        "databytes",
        "timeoutsmtpd",
        "queuelifetime",
        "concurrencylocal",
        "concurrencyremote",
        "servercert.pem",  # a self-signed certificate for STARTTLS/SMTPS (docs/tls.md)
    }
    assert (home.control / "me").read_text() == "mail.example.com\n"
    # issue 12 item 9: a fresh home limits messages to 50 MB (the seed's EHLO example
    # advertises SIZE 50000000), not qmail's unlimited 0.
    assert (home.control / "databytes").read_text() == "50000000\n"


def test_tcp_smtp_relays_loopback_only(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    init_home(home, "mail.example.com")
    rules = load_config(home).tcp_smtp
    assert rules.match("127.0.0.1").env == {"RELAYCLIENT": ""}
    assert rules.match("::1").env == {"RELAYCLIENT": ""}
    outside = rules.match("203.0.113.9")
    assert outside.allow and dict(outside.env) == {} and outside.rule == ""
    assert home.tcp_smtp.read_text().startswith("# ")


def test_settings_file_lists_every_setting(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    init_home(home, "m.test", smtp=["127.0.0.1:2600", "[::1]:2600"])
    text = home.settings_file.read_text()
    for word in ("workers", "max_connections", "max_per_ip", "url", "fsync", "level"):
        assert word in text
    data = tomllib.loads(text)
    assert data["listen"]["smtp"] == ["127.0.0.1:2600", "[::1]:2600"]
    listeners = load_config(home).settings.listeners
    assert [str(x) for x in listeners] == ["127.0.0.1:2600", "[::1]:2600"]


def test_demo_home(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    init_home(home, "m.test", demo=True)
    settings = load_config(home).settings
    assert settings.fsync is False and settings.log_level == "debug"


def test_empty_directory_is_accepted(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    home.root.mkdir()
    init_home(home, "m.test")
    assert check_config(home) == []


def test_refuses_existing_home(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    home.root.mkdir()
    (home.root / "keep").write_text("precious")
    with pytest.raises(ConfigError, match="already exists"):
        init_home(home, "m.test")
    assert [p.name for p in home.root.iterdir()] == ["keep"]


def test_refuses_existing_file(tmp_path: Path) -> None:
    (tmp_path / "home").write_text("x")
    with pytest.raises(ConfigError, match="already exists"):
        init_home(Home(tmp_path / "home"), "m.test")


def test_bad_arguments_reported_together(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    with pytest.raises(ConfigError) as info:
        init_home(home, "bad name", smtp=["nowhere:25", "127.0.0.1:99999"])
    assert len(info.value.problems) == 3
    assert not home.root.exists()


def test_creates_missing_parents(tmp_path: Path) -> None:
    home = Home(tmp_path / "a" / "b" / "home")
    init_home(home, "m.test")
    assert check_config(home) == []


def test_template_tells_the_truth_about_privileges(tmp_path: Path) -> None:
    # Nothing in qtoaster changes its user (DESIGN.md section 2's table is the goal, not
    # today): the template must say so, not promise a privilege drop.
    import qtoaster

    source = Path(qtoaster.__file__).parent
    calls = ("setuid(", "setresuid(", "setgid(", "setgroups(", "initgroups(")
    dropping = [
        path.name for path in source.rglob("*.py") if any(c in path.read_text() for c in calls)
    ]
    home = Home(tmp_path / "home")
    init_home(home, "mail.example.com", as_root=False)
    text = home.settings_file.read_text()
    assert "drops privileges after binding" not in text
    if not dropping:
        assert "runs as the user that started qtoaster" in text
