"""``qtoaster user add --from-file``: parsing, all-or-nothing, parallel hashing."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from qtoaster.cli.main import cli
from qtoaster.cli.userbatch import BatchLine, hash_passwords, parse_batch
from qtoaster.core.home import Home
from qtoaster.directory import passwords
from qtoaster.directory.store import (
    Directory,
    DirectoryError,
    NewUser,
    UserInfo,
    create_directory,
)
from qtoaster.maildir.quota import Quota


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


def all_users(home: Home) -> dict[str, UserInfo]:
    directory = Directory.open(home)
    try:
        return {u.address: u for u in directory.users()}
    finally:
        directory.close()


def many(count: int) -> list[str]:
    """``count`` lines over two domains; every 20th has a password, every 7th a quota."""
    lines = []
    for i in range(count):
        domain = "example.com" if i % 2 else "b.example"
        password = f"pw{i}:x" if i % 20 == 0 else ""
        quota = "5M,100C" if i % 7 == 0 else ""
        lines.append(f"user{i}@{domain}:{password}:{quota}")
    return lines


def test_two_hundred_users_in_one_go(home: Home, tmp_path: Path) -> None:
    source = tmp_path / "users.txt"
    source.write_text("# exported\n\n" + "\n".join(many(200)) + "\n")
    result = run(home, "user", "add", "--from-file", str(source))
    assert result.exit_code == 0, result.output
    assert result.output.startswith("added 200 user(s) in 2 domain(s), 10 with a password, in ")
    found = all_users(home)
    assert len(found) == 202  # and the two postmasters
    assert found["user7@example.com"].quota == 5 * 1024**2
    assert found["user7@example.com"].quota_messages == 100
    assert found["user1@example.com"].quota is None
    assert not found["user1@example.com"].has_password
    assert home.maildir("example.com", "user199").joinpath("new").is_dir()
    directory = Directory.open(home)
    try:
        for i in range(0, 200, 20):
            domain = "example.com" if i % 2 else "b.example"
            # A password may hold ':' when the quota field follows (here empty).
            assert directory.verify_password(f"user{i}@{domain}", f"pw{i}:x")
        assert not directory.verify_password("user0@b.example", "pw0")
    finally:
        directory.close()


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("not-an-address:pw", "line 103: invalid address: 'not-an-address'"),
        ("user1@example.com", "line 103: user1@example.com is already on line 4"),
        ("postmaster@example.com:pw", "line 103 (postmaster@example.com): the user already exists"),
        ("x@nowhere.example", "line 103 (x@nowhere.example): unknown domain: nowhere.example"),
        ("x@alias.example", "line 103 (x@alias.example): alias.example is an alias of example.com"),
        ("x@example.com:pw:lots", "line 103: invalid quota 'lots'"),
        ("x@example.com:pw:5M,5M", "the byte limit is given twice"),
    ],
)
def test_a_bad_line_adds_nobody(home: Home, bad: str, message: str) -> None:
    lines = many(200)
    lines.insert(100, bad)  # after the comment and blank line: line 103
    text = "# exported\n\n" + "\n".join(lines) + "\n"
    result = run(home, "user", "add", "--from-file", "-", stdin=text)
    assert result.exit_code == 1, result.output
    assert message in result.stderr
    assert result.stderr.rstrip().endswith("; nobody was added")
    assert len(result.stderr.splitlines()) == 1
    assert sorted(all_users(home)) == ["postmaster@b.example", "postmaster@example.com"]
    assert not (home.domains / "example.com" / "user1").exists()


def test_max_users_names_the_first_line_too_many(home: Home) -> None:
    run(home, "domain", "set", "b.example", "--max-users", "3")  # the postmaster is one
    text = "a@b.example\nb@b.example\nc@example.com\nc@b.example\n"
    result = run(home, "user", "add", "--from-file", "-", stdin=text)
    assert result.exit_code == 1
    assert "line 4 (c@b.example): b.example has its maximum of 3 users" in result.stderr
    assert len(all_users(home)) == 2


def test_stdin_and_a_summary(home: Home) -> None:
    result = run(home, "user", "add", "--from-file", "-", stdin="Alice@Example.com:s3cret\r\n")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("added 1 user(s) in 1 domain(s), 1 with a password, in ")
    directory = Directory.open(home)
    try:
        assert directory.verify_password("alice@example.com", "s3cret")
    finally:
        directory.close()


def test_explicit_noquota_beats_the_domain_default(home: Home) -> None:
    run(home, "domain", "set", "example.com", "--quota", "50M")
    text = "a@example.com::NOQUOTA\nb@example.com\nc@example.com::1G\nd@b.example::NOQUOTA\n"
    assert run(home, "user", "add", "--from-file", "-", stdin=text).exit_code == 0
    found = all_users(home)
    assert [found[f"{x}@example.com"].quota for x in "abc"] == [None, 50 * 1024**2, 1024**3]
    assert found["d@b.example"].quota is None


def test_secret_domains_get_a_note(home: Home) -> None:
    run(home, "domain", "set", "b.example", "--secrets")
    result = run(home, "user", "add", "--from-file", "-", stdin="a@b.example:pw\nb@b.example\n")
    assert result.exit_code == 0, result.output
    assert "note: b.example keep CRAM-MD5/APOP secrets" in result.output


@pytest.mark.parametrize(
    ("args", "stdin", "code", "message"),
    [
        (["--from-file", "-", "a@example.com"], "", 2, "takes no ADDRESS"),
        (["--from-file", "-", "--quota", "5M"], "", 2, "takes no ADDRESS, password or quota"),
        (["--from-file", "/nonexistent/users.txt"], None, 2, "No such file"),
        (["--from-file", "-"], "# nothing\n\n", 1, "no users in the file"),
    ],
)
def test_batch_usage(
    home: Home, args: list[str], stdin: str | None, code: int, message: str
) -> None:
    result = run(home, "user", "add", *args, stdin=stdin)
    assert result.exit_code == code, result.output
    assert message in result.stderr


def test_parse_batch_fields() -> None:
    lines = [
        "  # a comment\n",
        "a@example.com\n",
        "b@example.com:\n",
        "c@example.com:pw\n",
        "d@example.com:pw:5M\n",
        "e@example.com:p:w:\n",
        "f@example.com:p:w:1000C\n",
        "G@EXAMPLE.COM::NOQUOTA\n",
        "   \n",
        "h@example.com: spaced \n",
    ]
    assert parse_batch(lines) == [
        BatchLine(2, "a@example.com", None, None),
        BatchLine(3, "b@example.com", None, None),
        BatchLine(4, "c@example.com", "pw", None),
        BatchLine(5, "d@example.com", "pw", Quota(5 * 1024**2, None)),
        BatchLine(6, "e@example.com", "p:w", None),
        BatchLine(7, "f@example.com", "p:w", Quota(None, 1000)),
        BatchLine(8, "g@example.com", None, Quota(None, None)),
        BatchLine(10, "h@example.com", " spaced ", None),
    ]


def test_hash_passwords_keeps_the_order() -> None:
    secrets = [f"pw{i}" for i in range(6)]
    hashes = hash_passwords(secrets)
    assert len(hashes) == 6
    assert all(passwords.verify(h, p) for h, p in zip(hashes, secrets, strict=True))
    assert hash_passwords([]) == []


def test_add_users_itself_is_all_or_nothing(home: Home) -> None:
    directory = Directory.open(home)
    try:
        with pytest.raises(DirectoryError, match="already exists"):
            directory.add_users(
                [NewUser("a1@example.com"), NewUser("a2@example.com"), NewUser("a1@example.com")]
            )
        assert directory.user("a1@example.com") is None
    finally:
        directory.close()
