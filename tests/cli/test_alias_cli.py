"""``qtoaster alias`` (vpopmail's valias) through click's CliRunner, errors included."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from qtoaster.cli.main import cli
from qtoaster.core.home import Home
from qtoaster.directory.store import Directory, Recipient, create_directory


@pytest.fixture
def home(tmp_path: Path) -> Home:
    home = Home(tmp_path / "home")
    create_directory(home)
    home.control.mkdir()
    for args in (["example.com"], ["b.example"], ["alias.example", "--alias-of", "example.com"]):
        result = run(home, "domain", "add", *args)
        assert result.exit_code == 0, result.output
    return home


def run(home: Home, *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, [*args[:2], "--home", str(home.root), *args[2:]], input=stdin)


def resolve(home: Home, address: str) -> Recipient:
    directory = Directory.open(home)
    try:
        recipient = directory.resolve(address)
    finally:
        directory.close()
    assert recipient is not None
    return recipient


def test_alias_add_list_del(home: Home) -> None:
    result = run(home, "alias", "add", "Info@example.com", "a@b.example", "/var/mail/box/")
    assert result.exit_code == 0, result.output
    assert result.output == "added 2 target(s): info@example.com -> a@b.example, /var/mail/box/\n"
    assert resolve(home, "info@example.com").forwards == ("a@b.example", "/var/mail/box/")

    # Adding again keeps what is there and adds only the new targets.
    result = run(home, "alias", "add", "info@example.com", "a@b.example", "c@B.EXAMPLE")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("added 1 target(s): info@example.com -> a@b.example, ")
    run(home, "alias", "add", "sales@b.example", "boss@example.com")

    result = run(home, "alias", "list")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "sales@b.example -> boss@example.com",
        "info@example.com -> a@b.example, /var/mail/box/, c@b.example",
    ]
    assert run(home, "alias", "list", "b.example").output == "sales@b.example -> boss@example.com\n"
    # An alias domain lists its target's forwards.
    assert run(home, "alias", "list", "alias.example").output.startswith("info@example.com -> ")

    result = run(home, "alias", "del", "info@example.com", "/var/mail/box/")
    assert result.exit_code == 0, result.output
    assert result.output == "removed 1 target(s) of info@example.com\n"
    assert resolve(home, "info@example.com").forwards == ("a@b.example", "c@b.example")
    result = run(home, "alias", "del", "INFO@example.com")
    assert result.exit_code == 0, result.output
    assert result.output == "removed 2 target(s) of info@example.com\n"
    assert resolve(home, "info@example.com").forwards == ()
    assert run(home, "alias", "list", "example.com").output == ""


def test_alias_keep_copy_and_the_user_note(home: Home) -> None:
    run(home, "user", "add", "bob@example.com")
    result = run(home, "alias", "add", "bob@example.com", "bob@b.example")
    assert result.exit_code == 0, result.output
    assert "note: user bob@example.com gets no copy (see --keep-copy)" in result.output
    recipient = resolve(home, "bob@example.com")
    assert (recipient.forwards, recipient.keep_copy) == (("bob@b.example",), False)

    result = run(home, "alias", "add", "bob@example.com", "bob@b.example", "--keep-copy")
    assert result.exit_code == 0, result.output
    assert result.output == "added 0 target(s): bob@example.com -> bob@b.example (keep copy)\n"
    assert resolve(home, "bob@example.com").keep_copy
    assert run(home, "alias", "list").output == "bob@example.com -> bob@b.example (keep copy)\n"


def test_alias_through_an_alias_domain(home: Home) -> None:
    result = run(home, "alias", "add", "x@alias.example", "y@b.example")
    assert result.exit_code == 0, result.output
    assert resolve(home, "x@example.com").forwards == ("y@b.example",)
    assert run(home, "alias", "list").output == "x@example.com -> y@b.example\n"
    assert run(home, "alias", "del", "x@alias.example").exit_code == 0
    assert run(home, "alias", "list").output == ""


def test_user_del_takes_its_forwards(home: Home) -> None:
    run(home, "user", "add", "bob@example.com")
    run(home, "alias", "add", "bob@example.com", "bob@b.example", "--keep-copy")
    assert run(home, "user", "del", "bob@example.com", "--yes").exit_code == 0
    assert run(home, "alias", "list").output == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("alias", "add", "a@nowhere.example", "b@example.com"), "unknown domain"),
        (("alias", "add", "not-an-address", "b@example.com"), "invalid address"),
        (("alias", "add", "a@example.com", "a@example.com"), "cannot forward to itself"),
        (("alias", "add", "a@example.com", "relative/path/"), "invalid forward address"),
        (("alias", "add", "a@example.com", "/no/trailing/slash"), "invalid Maildir target"),
        (("alias", "add", "a@example.com", "b@bad_domain"), "invalid domain name"),
        (("alias", "del", "nobody@example.com"), "no such alias: nobody@example.com"),
        (("alias", "del", "a@nowhere.example"), "unknown domain"),
        (("alias", "list", "nowhere.example"), "unknown domain: nowhere.example"),
    ],
)
def test_alias_errors_exit_1(home: Home, args: tuple[str, ...], message: str) -> None:
    result = run(home, *args)
    assert result.exit_code == 1, result.output
    assert message in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_alias_del_of_a_target_it_does_not_have(home: Home) -> None:
    run(home, "alias", "add", "a@example.com", "b@b.example")
    result = run(home, "alias", "del", "a@example.com", "c@b.example")
    assert result.exit_code == 1
    assert "no such alias: a@example.com" in result.stderr
    assert resolve(home, "a@example.com").forwards == ("b@b.example",)


def test_alias_usage_errors_exit_2(home: Home) -> None:
    result = run(home, "alias", "add", "a@example.com")
    assert result.exit_code == 2
    assert "Missing argument 'TARGET...'" in result.stderr
    assert run(home, "alias", "del").exit_code == 2
