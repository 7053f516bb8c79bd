"""``qtoaster config check`` through click's CliRunner."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from qtoaster.cli.main import cli
from qtoaster.core.home import Home
from qtoaster.directory.store import create_directory
from qtoaster.tls.certs import self_signed, write_private


def make_home(root: Path) -> Home:
    home = Home(root)
    home.control.mkdir(parents=True)
    (home.control / "me").write_text("mx.example.com\n")
    home.settings_file.write_text('[listen]\nsmtp = ["127.0.0.1:2525"]\n')
    home.tcp_smtp.write_text('127.:allow,RELAYCLIENT=""\n')
    create_directory(home)  # a complete home has its directory database
    # ... and its certificate (qtoaster init writes one; a missing one is a problem)
    write_private(home.control / "servercert.pem", self_signed("mx.example.com"))
    return home


def test_check_ok(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home")
    result = CliRunner().invoke(cli, ["config", "check", "--home", str(home.root)])
    assert result.exit_code == 0, result.output
    # stdout only: run as root, stderr also warns about owners this hand-made home lacks
    assert result.stdout == "configuration OK\n"


def test_check_lists_every_problem(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home")
    (home.control / "me").unlink()
    (home.control / "timeoutsmtpd").write_text("20m\n")
    home.settings_file.write_text("[smtpd]\nworkers = 1000\n")
    home.tcp_smtp.write_text('127.:allow,RELAYCLIENT=""\n127.0.0.1 :allow\n:deny,X="open\n')
    result = CliRunner().invoke(cli, ["config", "check", "--home", str(home.root)])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 5, result.output
    assert lines[0].startswith("qtoaster.toml: [smtpd] workers")
    assert lines[1].startswith("control/me: missing")
    assert lines[2].startswith("control/timeoutsmtpd: '20m'")
    assert lines[3].startswith("tcp.smtp:2: spaces in address")
    assert lines[4].startswith("tcp.smtp:3: value of X is not closed")
    assert "5 problem(s)" in result.stderr


def test_check_uses_qtoaster_home_env(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home")
    result = CliRunner(env={"QTOASTER_HOME": str(home.root)}).invoke(cli, ["config", "check"])
    assert result.exit_code == 0, result.output


def test_check_missing_home(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["config", "check", "--home", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert "qtoaster init" in result.output


def test_check_reports_what_the_server_tolerates(tmp_path: Path) -> None:
    """Patterns that never match, a bad smtproutes line, a bad client certificate."""
    home = make_home(tmp_path / "home")
    (home.control / "badmailfrom").write_text("# fine\n@spam\\.example$\n(unclosed\n")
    (home.control / "smtproutes").write_text("example.com:relay.example:notaport\n")
    (home.control / "clientcert.pem").write_text("not a certificate\n")
    result = CliRunner().invoke(cli, ["config", "check", "--home", str(home.root)])
    assert result.exit_code == 1
    out = result.stdout
    assert "badmailfrom line 3" in out and "never matches" in out
    assert "smtproutes line 1" in out
    assert "clientcert.pem" in out


def test_check_fails_without_the_directory_database(tmp_path: Path) -> None:
    # Issue 12: config check said OK while users.sqlite3 was missing or damaged.
    home = make_home(tmp_path / "home")
    home.database.unlink()
    result = CliRunner().invoke(cli, ["config", "check", "--home", str(home.root)])
    assert result.exit_code == 1
    assert result.stdout.startswith("directory database: no directory database at ")
    assert "1 problem(s)" in result.stderr


def test_check_fails_on_a_damaged_directory_database(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home")
    size = home.database.stat().st_size
    with open(home.database, "r+b") as f:  # pages past the header overwritten
        f.seek(100)
        f.write(b"\xff" * (size - 100))
    result = CliRunner().invoke(cli, ["config", "check", "--home", str(home.root)])
    assert result.exit_code == 1
    assert result.stdout.startswith("users.sqlite3: "), result.output
    assert "1 problem(s)" in result.stderr


def test_check_fails_on_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home")
    home.database.write_bytes(b"not a database\n" * 1000)
    result = CliRunner().invoke(cli, ["config", "check", "--home", str(home.root)])
    assert result.exit_code == 1
    assert result.stdout.startswith("users.sqlite3: cannot read it: "), result.output


def test_check_warns_about_unknown_control_files(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home")
    (home.control / "databyts").write_text("1000000\n")  # misspelt: qmail ignores it silently
    (home.control / "frobnicate").write_text("x\n")
    (home.control / "plusdomain").write_text("example.com\n")  # qmail's: not reported
    (home.control / ".databytes.swp").write_text("")  # an editor's: not reported
    result = CliRunner().invoke(cli, ["config", "check", "--home", str(home.root)])
    assert result.exit_code == 0, result.output  # a warning, not a problem
    assert result.stdout == "configuration OK\n"
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: control/")]
    assert warnings == [
        "warning: control/databyts: not a control file qtoaster or qmail knows (it is "
        "ignored); did you mean databytes?",
        "warning: control/frobnicate: not a control file qtoaster or qmail knows (it is ignored)",
    ]


def test_known_control_files_cover_what_init_writes(tmp_path: Path) -> None:
    from qtoaster.config.control import KNOWN_CONTROL_FILES, unknown_control_files

    result = CliRunner().invoke(
        cli, ["init", "--home", str(tmp_path / "h"), "--me", "mx.example.com"]
    )
    assert result.exit_code == 0, result.output
    control = tmp_path / "h" / "control"
    assert set(p.name for p in control.iterdir()) <= KNOWN_CONTROL_FILES
    assert unknown_control_files(control) == []
    assert unknown_control_files(tmp_path / "missing") == []
