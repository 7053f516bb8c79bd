"""``qtoaster user vacation`` and ``user set --spam-folder`` through click's CliRunner,
with ``user show`` reporting both; bad input is a clear error (docs/directory.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from qtoaster.cli.main import cli
from qtoaster.core.home import Home
from qtoaster.directory.model import DAY
from qtoaster.directory.store import Directory, Vacation, create_directory

AUG_1 = 1722470400  # 2024-08-01 00:00 UTC


@pytest.fixture
def home(tmp_path: Path) -> Home:
    home = Home(tmp_path / "home")
    create_directory(home)
    home.control.mkdir()
    (home.control / "rcpthosts").write_text("")
    directory = Directory.open(home)
    directory.add_domain("example.com")
    directory.add_user("alice@example.com", None)
    directory.close()
    return home


def run(home: Home, *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, [*args[:2], "--home", str(home.root), *args[2:]], input=stdin)


def stored(home: Home) -> Vacation | None:
    directory = Directory.open(home)
    try:
        return directory.vacation("alice@example.com")
    finally:
        directory.close()


def test_vacation_on_show_and_off(home: Home, tmp_path: Path) -> None:
    text = tmp_path / "away.txt"
    text.write_text("Back on the 1st of September.\n")
    result = run(
        home, "user", "vacation", "alice@example.com", "--subject", "Away",
        "--message-file", str(text), "--start", "2024-08-01", "--end", "2024-08-31",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert stored(home) == Vacation(
        True, "Away", "Back on the 1st of September.\n", AUG_1, AUG_1 + 31 * DAY, 7 * DAY
    )
    show = run(home, "user", "show", "alice@example.com").output
    assert "vacation:       on, subject 'Away', once per sender per 7d" in show
    assert "from 2024-08-01 00:00:00 UTC, until 2024-09-01 00:00:00 UTC" in show
    assert "spam folder:    inbox" in show

    result = run(home, "user", "vacation", "alice@example.com", "--period", "1d")
    assert result.exit_code == 0, result.output
    found = stored(home)
    assert found is not None and found.period == DAY and found.subject == "Away"

    assert run(home, "user", "vacation", "alice@example.com", "--off").exit_code == 0
    found = stored(home)
    assert found is not None and not found.enabled and found.body.startswith("Back")
    assert (
        "vacation:       off, subject 'Away'"
        in run(home, "user", "show", "alice@example.com").output
    )


def test_message_from_stdin(home: Home) -> None:
    result = run(home, "user", "vacation", "alice@example.com", "--message-stdin", stdin="Away.\n")
    assert result.exit_code == 0, result.output
    assert stored(home) == Vacation(True, "", "Away.\n")


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ([], "give the reply's text"),
        (["--message-stdin", "--period", "soon"], "is no period"),
        (["--message-stdin", "--period", "10s"], "invalid period"),
        (["--message-stdin", "--start", "August"], "is no date"),
        (["--message-stdin", "--start", "2024-09-01", "--end", "2024-08-01"], "ends before"),
        (["--message-stdin", "--subject", "a\nb"], "invalid subject"),
        (["--off", "--subject", "x"], "--off takes no other option"),
    ],
)
def test_bad_input(home: Home, args: list[str], error: str) -> None:
    result = run(home, "user", "vacation", "alice@example.com", *args, stdin="text\n")
    assert result.exit_code != 0 and error in result.output, result.output
    assert stored(home) is None


def test_unknown_user(home: Home) -> None:
    result = run(home, "user", "vacation", "nobody@example.com", "--message-stdin", stdin="x")
    assert result.exit_code == 1 and "unknown user" in result.output


def test_spam_folder(home: Home) -> None:
    result = run(home, "user", "set", "alice@example.com", "--spam-folder", "junk")
    assert result.exit_code == 0, result.output
    assert "spam folder junk" in result.output
    assert "spam folder:    junk" in run(home, "user", "show", "alice@example.com").output
    assert run(home, "user", "set", "alice@example.com", "--spam-folder", "inbox").exit_code == 0
    assert "spam folder:    inbox" in run(home, "user", "show", "alice@example.com").output
    assert run(home, "user", "set", "alice@example.com", "--spam-folder", "x").exit_code == 2
