"""``qtoaster domain`` and ``qtoaster user`` through click's CliRunner, errors included."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from qtoaster.cli.directory import parse_quota
from qtoaster.cli.main import cli
from qtoaster.core.home import Home
from qtoaster.directory.store import Directory, create_directory


@pytest.fixture
def home(tmp_path: Path) -> Home:
    home = Home(tmp_path / "home")
    create_directory(home)
    home.control.mkdir()
    (home.control / "rcpthosts").write_text("# relay for these\nmx.example.com\n")
    return home


def run(home: Home, *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, [*args[:2], "--home", str(home.root), *args[2:]], input=stdin)


def users(home: Home) -> list[tuple[str, int | None, bool]]:
    directory = Directory.open(home)
    try:
        return [(u.address, u.quota, u.has_password) for u in directory.users()]
    finally:
        directory.close()


def test_domain_add_list_del(home: Home) -> None:
    result = run(home, "domain", "add", "Example.COM")
    assert result.exit_code == 0, result.output
    assert "added domain example.com" in result.output
    assert users(home) == [("postmaster@example.com", None, False)]
    assert home.maildir("example.com", "postmaster").joinpath("new").is_dir()
    rcpthosts = home.control / "rcpthosts"
    assert rcpthosts.read_text() == "# relay for these\nmx.example.com\nexample.com\n"

    assert run(home, "domain", "add", "b.example").exit_code == 0
    result = run(home, "domain", "list")
    assert result.exit_code == 0
    assert result.output == "b.example\nexample.com\n"

    result = run(home, "domain", "del", "example.com", "--yes")
    assert result.exit_code == 0, result.output
    assert not (home.domains / "example.com").exists()
    assert rcpthosts.read_text() == "# relay for these\nmx.example.com\nb.example\n"
    assert run(home, "domain", "list").output == "b.example\n"


def test_domain_add_creates_missing_rcpthosts(home: Home) -> None:
    (home.control / "rcpthosts").unlink()
    assert run(home, "domain", "add", "example.com").exit_code == 0
    assert (home.control / "rcpthosts").read_text() == "example.com\n"


def test_domain_del_asks_first(home: Home) -> None:
    run(home, "domain", "add", "example.com")
    result = run(home, "domain", "del", "example.com", stdin="n\n")
    assert result.exit_code == 1
    assert "Delete domain example.com, its 1 user(s)" in result.output
    assert (home.domains / "example.com").is_dir()
    result = run(home, "domain", "del", "example.com", stdin="y\n")
    assert result.exit_code == 0
    assert not (home.domains / "example.com").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("domain", "add", "bad_name"), "invalid domain name"),
        (("domain", "del", "nowhere.example", "--yes"), "unknown domain: nowhere.example"),
        (("user", "add", "a@nowhere.example"), "unknown domain: nowhere.example"),
        (("user", "add", "not-an-address"), "invalid address"),
        (("user", "add", "a/b@example.com"), "invalid address"),
        (("user", "add", "postmaster@example.com"), "already exists"),
        (("user", "add", "a@example.com", "--quota", "lots"), "invalid quota"),
        (("user", "add", "a@example.com", "--password", "x", "--password-stdin"), "not both"),
        (("user", "add", "a@example.com", "--password", ""), "password is empty"),
        (("user", "del", "nobody@example.com", "--yes"), "unknown user: nobody@example.com"),
        (("user", "list", "nowhere.example"), "unknown domain: nowhere.example"),
    ],
)
def test_errors_exit_1_with_a_clear_message(
    home: Home, args: tuple[str, ...], message: str
) -> None:
    run(home, "domain", "add", "example.com")
    result = run(home, *args)
    assert result.exit_code == 1, result.output
    assert message in result.output


def test_domain_add_twice_is_an_error(home: Home) -> None:
    run(home, "domain", "add", "example.com")
    result = run(home, "domain", "add", "EXAMPLE.com")
    assert result.exit_code == 1
    assert "domain example.com already exists" in result.output


def test_home_without_directory_is_an_error(tmp_path: Path) -> None:
    result = run(Home(tmp_path / "nothing"), "domain", "list")
    assert result.exit_code == 1
    assert "no directory database" in result.output


def test_user_add_list_del(home: Home) -> None:
    run(home, "domain", "add", "example.com")
    result = run(
        home,
        "user",
        "add",
        "Alice@example.com",
        "--password-stdin",
        "--quota",
        "50M",
        stdin="s3cret\n",
    )
    assert result.exit_code == 0, result.output
    assert "added user alice@example.com" in result.output
    assert run(home, "user", "add", "bob@example.com").exit_code == 0
    assert users(home) == [
        ("alice@example.com", 50 * 1024 * 1024, True),
        ("bob@example.com", None, False),
        ("postmaster@example.com", None, False),
    ]
    directory = Directory.open(home)
    assert directory.verify_password("alice@example.com", "s3cret")
    directory.close()

    result = run(home, "user", "list", "example.com")
    assert result.exit_code == 0
    assert result.output.splitlines() == [
        "alice@example.com\t52428800\tpassword",
        "bob@example.com\tNOQUOTA\tno-password",
        "postmaster@example.com\tNOQUOTA\tno-password",
    ]
    assert run(home, "user", "list").output == result.output

    maildir = home.maildir("example.com", "alice")
    assert run(home, "user", "del", "alice@example.com", stdin="n\n").exit_code == 1
    assert maildir.is_dir()
    result = run(home, "user", "del", "ALICE@example.com", "--yes")
    assert result.exit_code == 0, result.output
    assert not maildir.parent.exists()
    assert [u[0] for u in users(home)] == ["bob@example.com", "postmaster@example.com"]


def test_user_add_with_password_option(home: Home) -> None:
    run(home, "domain", "add", "example.com")
    result = run(home, "user", "add", "carol@example.com", "--password", "pw")
    assert result.exit_code == 0, result.output
    assert users(home)[0] == ("carol@example.com", None, True)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("NOQUOTA", None),
        ("noquota", None),
        ("1000", 1000),
        ("10485760S", 10485760),
        ("5K", 5 * 1024),
        ("50M", 50 * 1024**2),
        ("2g", 2 * 1024**3),
        ("7MB", 7 * 1024**2),
    ],
)
def test_parse_quota(text: str, expected: int | None) -> None:
    assert parse_quota(text) == expected


@pytest.mark.parametrize("text", ["", "M", "-5M", "5T", "1.5M", "5M,100C"])
def test_parse_quota_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid quota"):
        parse_quota(text)


def test_database_url_comes_from_the_settings(home: Home) -> None:
    # A PostgreSQL URL reaches Directory.open: without a driver that is a clear error.
    home.settings_file.write_text('[database]\nurl = "postgresql://qt@127.0.0.1:1/none"\n')
    result = run(home, "domain", "list")
    assert result.exit_code == 1
    assert "postgresql" in result.output
