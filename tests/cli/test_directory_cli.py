"""``qtoaster domain`` and ``qtoaster user`` through click's CliRunner, errors included."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from qtoaster.cli.main import cli
from qtoaster.core.home import Home
from qtoaster.directory.schema import UserFlag
from qtoaster.directory.store import Directory, DomainInfo, UserInfo, create_directory


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
        (("user", "add", "alice@"), "invalid address 'alice@': the domain is missing"),
        (("user", "add", "@example.com"), "invalid address '@example.com': the local part is"),
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
        "alice@example.com\t52428800\tpassword\t-",
        "bob@example.com\tNOQUOTA\tno-password\t-",
        "postmaster@example.com\tNOQUOTA\tno-password\t-",
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


def test_database_url_comes_from_the_settings(home: Home) -> None:
    # A PostgreSQL URL reaches Directory.open: without a driver that is a clear error.
    home.settings_file.write_text('[database]\nurl = "postgresql://qt@127.0.0.1:1/none"\n')
    result = run(home, "domain", "list")
    assert result.exit_code == 1
    assert "postgresql" in result.output


def domain_info(home: Home, name: str) -> DomainInfo:
    directory = Directory.open(home)
    try:
        info = directory.domain(name)
    finally:
        directory.close()
    assert info is not None
    return info


def user_info(home: Home, address: str) -> UserInfo:
    directory = Directory.open(home)
    try:
        info = directory.user(address)
    finally:
        directory.close()
    assert info is not None
    return info


def test_domain_add_with_settings(home: Home) -> None:
    result = run(
        home, "domain", "add", "example.com", "--quota", "50M", "--max-users", "3", "--secrets"
    )
    assert result.exit_code == 0, result.output
    info = domain_info(home, "example.com")
    assert (info.default_quota, info.max_users, info.secrets) == (50 * 1024**2, 3, True)
    assert info.unknown_user == "bounce"
    # The postmaster gets the domain's default quota, as every user without one.
    assert users(home) == [("postmaster@example.com", 50 * 1024**2, False)]


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        (["--catchall", "Boss@Example.com"], "boss@example.com"),
        (["--bounce"], "bounce"),
        (["--delete"], "delete"),
        ([], "bounce"),
    ],
)
def test_domain_add_unknown_user_handling(home: Home, option: list[str], expected: str) -> None:
    assert run(home, "domain", "add", "example.com", *option).exit_code == 0
    assert domain_info(home, "example.com").unknown_user == expected


def test_alias_domain_add_list_show_del(home: Home) -> None:
    run(home, "domain", "add", "example.com")
    result = run(home, "domain", "add", "Alias.example", "--alias-of", "EXAMPLE.com")
    assert result.exit_code == 0, result.output
    assert result.output == "added alias domain alias.example -> example.com\n"
    # No postmaster of its own; a line in rcpthosts.
    assert [u[0] for u in users(home)] == ["postmaster@example.com"]
    rcpthosts = home.control / "rcpthosts"
    assert rcpthosts.read_text().splitlines()[-2:] == ["example.com", "alias.example"]
    assert run(home, "domain", "list").output == "alias.example -> example.com\nexample.com\n"

    shown = run(home, "domain", "show", "alias.example")
    assert shown.exit_code == 0, shown.output
    assert "alias of:       example.com (whose settings apply)" in shown.output
    assert "users:          1 (of example.com)" in shown.output
    assert "alias domains:  alias.example" in run(home, "domain", "show", "example.com").output

    result = run(home, "domain", "del", "alias.example", stdin="n\n")
    assert result.exit_code == 1
    assert "Delete alias domain alias.example of example.com?" in result.output
    result = run(home, "domain", "del", "alias.example", stdin="y\n")
    assert result.exit_code == 0, result.output
    assert "deleted alias domain alias.example (no mail removed)" in result.output
    assert home.maildir("example.com", "postmaster").is_dir()
    assert "alias.example" not in rcpthosts.read_text()
    assert run(home, "domain", "list").output == "example.com\n"


def test_domain_del_takes_its_alias_domains_along(home: Home) -> None:
    run(home, "domain", "add", "example.com")
    run(home, "domain", "add", "alias.example", "--alias-of", "example.com")
    result = run(home, "domain", "del", "example.com", stdin="n\n")
    assert "its 1 user(s), alias domain alias.example and all mail" in result.output
    assert run(home, "domain", "del", "example.com", "--yes").exit_code == 0
    assert (home.control / "rcpthosts").read_text() == "# relay for these\nmx.example.com\n"
    assert run(home, "domain", "list").output == ""


def test_domain_show(home: Home) -> None:
    run(home, "domain", "add", "example.com", "--quota", "50M", "--catchall", "a@example.com")
    run(home, "domain", "add", "b.example", "--alias-of", "example.com")
    result = run(home, "domain", "show", "Example.com")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[:9] == [
        "domain:         example.com",
        "alias of:       - (a real domain)",
        "default quota:  50M (52428800 bytes)",
        "max users:      unlimited",
        "unknown users:  forward to a@example.com (catch-all)",
        "secrets:        not kept",
        "users:          1",
        "aliases:        0",
        "alias domains:  b.example",
    ]
    assert lines[9].startswith("created:        20") and lines[9].endswith(" UTC")
    assert len(lines) == 10


@pytest.mark.parametrize(
    ("args", "expected", "text"),
    [
        (["boss@example.com"], "boss@example.com", "forward to boss@example.com (catch-all)"),
        (["--delete"], "delete", "delete (accepted and discarded)"),
        (["--bounce"], "bounce", "bounce (refused at RCPT by chkuser)"),
    ],
)
def test_domain_catchall(home: Home, args: list[str], expected: str, text: str) -> None:
    run(home, "domain", "add", "example.com", "--delete" if expected != "delete" else "--bounce")
    result = run(home, "domain", "catchall", "example.com", *args)
    assert result.exit_code == 0, result.output
    assert result.output == f"example.com: unknown users: {text}\n"
    assert domain_info(home, "example.com").unknown_user == expected


def test_domain_set(home: Home) -> None:
    run(home, "domain", "add", "example.com")
    result = run(
        home, "domain", "set", "example.com", "--quota", "2G", "--max-users", "7", "--secrets"
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "example.com: default quota 2G (2147483648 bytes); max users 7; secrets kept",
        "existing users get secrets at their next `qtoaster user passwd`",
    ]
    info = domain_info(home, "example.com")
    assert (info.default_quota, info.max_users, info.secrets) == (2 * 1024**3, 7, True)
    result = run(
        home,
        "domain",
        "set",
        "example.com",
        "--quota",
        "NOQUOTA",
        "--no-max-users",
        "--no-secrets",
    )
    assert result.exit_code == 0, result.output
    assert result.output == (
        "example.com: default quota NOQUOTA; max users unlimited; secrets not kept\n"
    )
    info = domain_info(home, "example.com")
    assert (info.default_quota, info.max_users, info.secrets) == (None, None, False)
    # Only what is given changes.
    assert run(home, "domain", "set", "example.com", "--max-users", "2").exit_code == 0
    info = domain_info(home, "example.com")
    assert (info.default_quota, info.max_users, info.secrets) == (None, 2, False)


def test_domain_max_users_is_enforced(home: Home) -> None:
    run(home, "domain", "add", "example.com", "--max-users", "2")
    assert run(home, "user", "add", "a@example.com").exit_code == 0
    result = run(home, "user", "add", "b@example.com")
    assert result.exit_code == 1
    assert "maximum of users" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("domain", "add", "x.example", "--bounce", "--catchall", "a@x.example"), "give one of"),
        (("domain", "add", "x.example", "--delete", "--bounce"), None),
        (("domain", "add", "x.example", "--alias-of", "example.com", "--secrets"), "no other"),
        (("domain", "add", "x.example", "--max-users", "-1"), "-1"),
        (("domain", "catchall", "example.com"), "give a catch-all address"),
        (("domain", "catchall", "example.com", "a@example.com", "--delete"), "give one of"),
        (("domain", "set", "example.com"), "nothing to change"),
        (("domain", "set", "example.com", "--max-users", "3", "--no-max-users"), "not both"),
        (("user", "add"), "give an ADDRESS or --from-file"),
        (("user", "set", "postmaster@example.com"), "nothing to change"),
        (("user", "quota", "postmaster@example.com"), "Missing argument 'SIZE'"),
        (("alias", "add", "a@example.com"), "Missing argument 'TARGET...'"),
    ],
)
def test_usage_errors_exit_2(home: Home, args: tuple[str, ...], message: str | None) -> None:
    run(home, "domain", "add", "example.com")
    result = run(home, *args)
    assert result.exit_code == 2, result.output
    if message is not None:
        assert message in result.stderr
    assert domain_info(home, "example.com").unknown_user == "bounce"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("domain", "add", "x.example", "--quota", "5M,100C"), "default quota is a size only"),
        (("domain", "add", "x.example", "--quota", "lots"), "invalid quota 'lots'"),
        (("domain", "add", "x.example", "--catchall", "nobody"), "invalid address"),
        (("domain", "add", "x.example", "--alias-of", "nowhere.example"), "unknown domain"),
        (("domain", "add", "x.example", "--alias-of", "alias.example"), "itself an alias"),
        (("domain", "add", "alias.example", "--alias-of", "example.com"), "already exists"),
        (("domain", "show", "nowhere.example"), "unknown domain: nowhere.example"),
        (("domain", "catchall", "nowhere.example", "--bounce"), "unknown domain"),
        (("domain", "catchall", "example.com", "not-an-address"), "invalid address"),
        (("domain", "catchall", "alias.example", "--delete"), "is an alias domain"),
        (("domain", "set", "nowhere.example", "--secrets"), "unknown domain"),
        (("domain", "set", "alias.example", "--secrets"), "is an alias domain"),
        (("user", "add", "bob@alias.example"), "is an alias"),
        (("user", "add", "a@example.com", "--quota", "5X"), "invalid quota"),
        (("user", "passwd", "nobody@example.com", "--password", "x"), "unknown user"),
        (("user", "passwd", "postmaster@example.com", "--password", ""), "password is empty"),
        (("user", "passwd", "postmaster@example.com", "--password", "x", "--remove"), "not both"),
        (("user", "quota", "nobody@example.com", "5M"), "unknown user"),
        (("user", "quota", "postmaster@example.com", "5Q"), "invalid quota"),
        (("user", "show", "nobody@example.com"), "unknown user: nobody@example.com"),
        (("user", "set", "nobody@example.com", "--no-pop"), "unknown user"),
    ],
)
def test_more_errors_exit_1(home: Home, args: tuple[str, ...], message: str) -> None:
    run(home, "domain", "add", "example.com")
    run(home, "domain", "add", "alias.example", "--alias-of", "example.com")
    result = run(home, *args)
    assert result.exit_code == 1, result.output
    assert message in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_user_add_quota_forms(home: Home) -> None:
    run(home, "domain", "add", "example.com", "--quota", "50M")
    assert run(home, "user", "add", "a@example.com", "--quota", "5M,100C").exit_code == 0
    assert run(home, "user", "add", "b@example.com", "--quota", "NOQUOTA").exit_code == 0
    assert run(home, "user", "add", "c@example.com", "--quota", "1000C").exit_code == 0
    assert run(home, "user", "add", "d@example.com").exit_code == 0
    a, b, c, d = (user_info(home, f"{x}@example.com") for x in "abcd")
    assert (a.quota, a.quota_messages) == (5 * 1024**2, 100)
    # An explicit NOQUOTA (or a count alone) wins over the domain's default size.
    assert (b.quota, b.quota_messages) == (None, None)
    assert (c.quota, c.quota_messages) == (None, 1000)
    assert (d.quota, d.quota_messages) == (50 * 1024**2, None)
    listed = run(home, "user", "list").output.splitlines()
    assert listed[:4] == [
        "a@example.com\t5242880S,100C\tno-password\t-",
        "b@example.com\tNOQUOTA\tno-password\t-",
        "c@example.com\t1000C\tno-password\t-",
        "d@example.com\t52428800\tno-password\t-",
    ]


def test_user_passwd(home: Home) -> None:
    run(home, "domain", "add", "example.com")
    address = "postmaster@example.com"
    result = run(home, "user", "passwd", address, "--password", "one")
    assert result.exit_code == 0, result.output
    assert result.output == "changed the password of postmaster@example.com\n"
    assert verify(home, address, "one")
    assert run(home, "user", "passwd", address, "--password-stdin", stdin="two\n").exit_code == 0
    assert verify(home, address, "two") and not verify(home, address, "one")
    # No option: asked twice, hidden (vpasswd).
    result = run(home, "user", "passwd", address, stdin="three\nthree\n")
    assert result.exit_code == 0, result.output
    assert verify(home, address, "three")
    result = run(home, "user", "passwd", address, "--remove")
    assert result.exit_code == 0, result.output
    assert result.output == "removed the password of postmaster@example.com: it cannot log in\n"
    assert not verify(home, address, "three")
    assert not user_info(home, address).has_password


def verify(home: Home, address: str, password: str) -> bool:
    directory = Directory.open(home)
    try:
        return directory.verify_password(address, password)
    finally:
        directory.close()


def test_user_passwd_keeps_secrets_when_the_domain_asks(home: Home) -> None:
    run(home, "domain", "add", "example.com", "--secrets")
    result = run(home, "user", "passwd", "postmaster@example.com", "--password", "pw")
    assert result.exit_code == 0, result.output
    assert "and its CRAM-MD5/APOP secrets" in result.output
    assert user_info(home, "postmaster@example.com").has_secrets


@pytest.mark.parametrize(
    ("size", "stored", "text"),
    [
        ("50M", (50 * 1024**2, None), "50M (52428800 bytes)"),
        ("10485760S,1000C", (10485760, 1000), "10M (10485760 bytes), 1000 messages"),
        ("1000", (1000, None), "1000 bytes"),
        ("NOQUOTA", (None, None), "NOQUOTA (unlimited)"),
    ],
)
def test_user_quota(
    home: Home, size: str, stored: tuple[int | None, int | None], text: str
) -> None:
    run(home, "domain", "add", "example.com")
    run(home, "user", "add", "a@example.com", "--quota", "1G,5C")
    result = run(home, "user", "quota", "A@example.com", size)
    assert result.exit_code == 0, result.output
    assert result.output == f"a@example.com: quota {text}\n"
    info = user_info(home, "a@example.com")
    assert (info.quota, info.quota_messages) == stored


def test_user_show(home: Home) -> None:
    run(home, "domain", "add", "example.com")
    run(home, "user", "add", "a@example.com", "--password", "pw", "--quota", "1M")
    result = run(home, "user", "show", "A@example.com")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    maildir = home.maildir("example.com", "a")
    assert lines[:11] == [
        "address:        a@example.com",
        "domain:         example.com",
        "local part:     a",
        f"maildir:        {maildir}",
        "password:       set",
        "quota:          1M (1048576 bytes)",
        "usage:          not computed (no maildirsize yet)",
        "flags:          -",
        "secrets:        the domain's choice (not kept); stored: no",
        "spam folder:    inbox",
        "vacation:       off",
    ]
    assert lines[11].startswith("created:        ") and len(lines) == 12

    (maildir / "maildirsize").write_text("1048576S\n262144 3\n-1024 -1\n")
    run(home, "user", "set", "a@example.com", "--disable", "--no-relay")
    run(home, "user", "passwd", "a@example.com", "--remove")
    lines = run(home, "user", "show", "a@example.com").output.splitlines()
    assert lines[4] == "password:       none (cannot log in)"
    assert lines[6] == "usage:          261120 bytes in 2 message(s), 24% of 1M"
    assert lines[7] == "flags:          norelay,disabled"


@pytest.mark.parametrize(
    ("options", "flags", "text"),
    [
        (["--no-pop"], UserFlag.NO_POP, "nopop"),
        (["--no-imap"], UserFlag.NO_IMAP, "noimap"),
        (
            ["--no-smtp-auth", "--no-relay"],
            UserFlag.NO_SMTP_AUTH | UserFlag.NO_RELAY,
            "noauth,norelay",
        ),
        (["--disable"], UserFlag.DISABLED, "disabled"),
        (["--bounce-mail"], UserFlag.BOUNCE_MAIL, "bounce"),
        (["--no-pop", "--pop"], UserFlag(0), "-"),  # the last one given wins (click)
    ],
)
def test_user_set_flags(home: Home, options: list[str], flags: UserFlag, text: str) -> None:
    run(home, "domain", "add", "example.com")
    result = run(home, "user", "set", "postmaster@example.com", *options)
    assert result.exit_code == 0, result.output
    assert result.output == f"postmaster@example.com: flags {text}\n"
    assert user_info(home, "postmaster@example.com").flags == flags


def test_user_set_clears_flags(home: Home) -> None:
    run(home, "domain", "add", "example.com")
    address = "postmaster@example.com"
    everything = ["--no-pop", "--no-smtp-auth", "--no-relay", "--disable", "--bounce-mail"]
    run(home, "user", "set", address, *everything)
    assert run(home, "user", "list").output.endswith("\tnopop,noauth,norelay,disabled,bounce\n")
    result = run(
        home,
        "user",
        "set",
        address,
        "--pop",
        "--smtp-auth",
        "--relay",
        "--enable",
        "--no-bounce-mail",
    )
    assert result.exit_code == 0, result.output
    assert user_info(home, address).flags == UserFlag(0)


def test_user_set_secrets(home: Home) -> None:
    run(home, "domain", "add", "example.com")
    address = "postmaster@example.com"
    run(home, "user", "passwd", address, "--password", "pw")
    result = run(home, "user", "set", address, "--secrets")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "postmaster@example.com: flags -",
        "postmaster@example.com: secrets kept; stored: no",
        "the secrets take effect at the next `qtoaster user passwd`",
    ]
    run(home, "user", "passwd", address, "--password", "pw2")
    assert user_info(home, address).has_secrets
    result = run(home, "user", "set", address, "--no-secrets")
    assert "secrets not kept; stored: no" in result.output
    info = user_info(home, address)
    assert (info.secrets, info.has_secrets) == (False, False)
    result = run(home, "user", "set", address, "--domain-secrets")
    assert "secrets the domain's choice (not kept); stored: no" in result.output
    assert "take effect" not in result.output
    assert user_info(home, address).secrets is None


def test_user_add_and_passwd_store_credentials_only_in_the_credential_store(home: Home) -> None:
    # Decision 0007 "Secrets": smtpd reads users.sqlite3, so no hash or secret may be in it.
    from qtoaster.directory.store import credentials_file

    assert run(home, "domain", "add", "example.com", "--secrets").exit_code == 0
    result = run(home, "user", "add", "alice@example.com", "--password", "s3cret")
    assert result.exit_code == 0, result.output
    assert run(home, "user", "passwd", "postmaster@example.com", "--password", "pm").exit_code == 0
    assert verify(home, "alice@example.com", "s3cret")
    assert verify(home, "postmaster@example.com", "pm")
    assert user_info(home, "alice@example.com").has_secrets

    def raw(path: Path) -> bytes:
        wal = path.with_name(path.name + "-wal")
        return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")

    directory_bytes = raw(home.database)
    assert b"$argon2" not in directory_bytes and b"v1:" not in directory_bytes
    assert raw(credentials_file(home)).count(b"$argon2") >= 2
