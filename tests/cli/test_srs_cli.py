"""``qtoaster srs keygen``: make, rotate and trim the SRS key (docs/srs.md)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from qtoaster.cli.main import cli
from qtoaster.cli.newhome import init_home
from qtoaster.config.loader import load_config
from qtoaster.core.home import Home
from qtoaster.mailauth.srs import key_path, read_keys


def _run(home: Home, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["srs", "keygen", "--home", str(home.root), *args])
    return result.exit_code, result.output


def test_keygen(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    init_home(home, "mx.example.test", smtp=["127.0.0.1:0"])
    assert load_config(home).settings.srs.max_age_days == 21  # init writes [srs]
    path = key_path(home)
    [first] = read_keys(path)
    assert _run(home) == (0, f"{path}: exists (1 key(s)); --rotate makes a new signing key\n")
    assert _run(home, "--rotate") == (0, f"{path}: 2 key(s), the first signs\n")
    new, old = read_keys(path)
    assert old == first and new != first
    assert _run(home, "--drop-old") == (0, f"{path}: 1 key(s), the first signs\n")
    assert read_keys(path) == (new,)
    path.unlink()
    assert _run(home) == (0, f"{path}: created\n")
    assert path.stat().st_mode & 0o777 == 0o600


def test_keygen_needs_a_home(tmp_path: Path) -> None:
    code, output = _run(Home(tmp_path / "nowhere"))
    assert code == 1 and "not a qtoaster home" in output


def test_config_check_warns_of_a_missing_or_empty_key(tmp_path: Path) -> None:
    from qtoaster.supervisor.check import check_config, check_warnings

    home = Home(tmp_path / "home")
    init_home(home, "mx.example.test", smtp=["127.0.0.1:0"])
    assert check_warnings(home) == []
    path = key_path(home)
    path.write_text("# no key\n")
    [warning] = check_warnings(home)
    assert warning.startswith(f"{path}: unusable: ") and "qtoaster srs keygen" in warning
    path.unlink()
    fix = "qtoaster srs keygen makes one, as run does at start; until then forwards wait"
    assert check_warnings(home) == [f"{path}: missing ({fix})"]
    assert check_config(home) == []  # not a problem: run makes it
    text = home.settings_file.read_text()
    home.settings_file.write_text(
        text.replace("enabled = true\n# domain", "enabled = false\n# domain")
    )
    assert check_warnings(home) == []
