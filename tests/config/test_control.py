"""Control-file reading rules (spec 2), defaults (spec 15), rcpthosts (spec 3.5)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qtoaster.config.control import (
    Controls,
    load_controls,
    read_int,
    read_line,
    read_list,
)
from qtoaster.core.errors import ConfigError


def write(directory: Path, name: str, content: str | bytes) -> Path:
    path = directory / name
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return path


@pytest.fixture
def control(tmp_path: Path) -> Path:
    directory = tmp_path / "control"
    directory.mkdir()
    write(directory, "me", "mail.example.com\n")
    return directory


# -- readline ---------------------------------------------------------------------------


def test_read_line_first_line_only_trailing_blanks_stripped(tmp_path: Path) -> None:
    path = write(tmp_path, "f", "  hello world \t \nsecond line\n")
    assert read_line(path) == "  hello world"


def test_read_line_missing_is_none_empty_is_empty(tmp_path: Path) -> None:
    assert read_line(tmp_path / "absent") is None
    assert read_line(write(tmp_path, "empty", "")) == ""


def test_read_line_without_newline_and_keeps_carriage_return(tmp_path: Path) -> None:
    assert read_line(write(tmp_path, "a", "x")) == "x"
    # qmail strips only LF, space and tab: a CR stays part of the value.
    assert read_line(write(tmp_path, "b", "x\r\n")) == "x\r"


def test_read_line_unreadable_raises(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    with pytest.raises(OSError):
        read_line(tmp_path / "dir")


def test_read_line_keeps_undecodable_bytes(tmp_path: Path) -> None:
    value = read_line(write(tmp_path, "f", b"caf\xe9\n"))
    assert value is not None
    assert value.encode("utf-8", "surrogateescape") == b"caf\xe9"


# -- integers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("42\n", 42),
        ("42 \n", 42),
        ("10M\n", 10),  # leading digits, as scan_ulong
        ("0\n", 0),
        (" 42\n", 7),  # does not start with a digit: default
        ("-5\n", 7),
        ("abc\n", 7),
        ("", 7),
        ("\n12\n", 7),  # only the first line counts
    ],
)
def test_read_int(tmp_path: Path, content: str, expected: int) -> None:
    assert read_int(write(tmp_path, "n", content), 7) == expected


def test_read_int_missing_is_default(tmp_path: Path) -> None:
    assert read_int(tmp_path / "absent", 99) == 99


# -- readfile lists ---------------------------------------------------------------------


def test_read_list_rules(tmp_path: Path) -> None:
    text = "a.com\n\n# comment\n  leading.com  \n\t\n b#c \nlast"
    assert read_list(write(tmp_path, "l", text)) == ["a.com", "  leading.com", " b#c", "last"]


def test_read_list_hash_only_at_first_character(tmp_path: Path) -> None:
    assert read_list(write(tmp_path, "l", " #not a comment\n#comment\n")) == [" #not a comment"]


def test_read_list_missing_is_empty(tmp_path: Path) -> None:
    assert read_list(tmp_path / "absent") == []


# -- load_controls: defaults ------------------------------------------------------------


def test_defaults_from_me(control: Path) -> None:
    c = load_controls(control)
    assert c == Controls.for_me("mail.example.com")
    assert c.smtpgreeting == c.defaultdomain == c.localiphost == c.envnoathost == c.me
    assert c.bouncehost == c.doublebouncehost == "mail.example.com"
    assert (c.bouncefrom, c.doublebounceto) == ("MAILER-DAEMON", "postmaster")
    assert c.locals == frozenset({"mail.example.com"})
    assert c.rcpthosts is None
    assert (c.databytes, c.timeoutsmtpd, c.queuelifetime) == (0, 1200, 604800)
    assert (c.concurrencylocal, c.concurrencyremote) == (10, 20)
    assert c.percenthack == frozenset() and dict(c.virtualdomains) == {}


def test_files_override_defaults(control: Path) -> None:
    for name, value in {
        "smtpgreeting": "mx.example.com welcomes you",
        "defaultdomain": "example.com",
        "localiphost": "ip.example.com",
        "envnoathost": "noat.example.com",
        "bouncefrom": "bounces",
        "bouncehost": "b.example.com",
        "doublebounceto": "admin",
        "doublebouncehost": "db.example.com",
        "databytes": "20000000",
        "queuelifetime": "3600",
        "concurrencylocal": "5",
        "concurrencyremote": "300",
    }.items():
        write(control, name, value + "\n")
    write(control, "locals", "localhost\nMail.Example.COM\n")
    write(control, "percenthack", "Old.Example\n")
    c = load_controls(control)
    assert c.smtpgreeting == "mx.example.com welcomes you"
    assert (c.defaultdomain, c.localiphost, c.envnoathost) == (
        "example.com",
        "ip.example.com",
        "noat.example.com",
    )
    assert (c.bouncefrom, c.bouncehost) == ("bounces", "b.example.com")
    assert (c.doublebounceto, c.doublebouncehost) == ("admin", "db.example.com")
    assert (c.databytes, c.queuelifetime) == (20000000, 3600)
    assert c.concurrencylocal == 5
    assert c.concurrencyremote == 120  # capped at qmail's SPAWN limit
    assert c.locals == frozenset({"localhost", "mail.example.com"})
    assert c.percenthack == frozenset({"old.example"})


def test_timeoutsmtpd_zero_becomes_one(control: Path) -> None:
    write(control, "timeoutsmtpd", "0\n")
    assert load_controls(control).timeoutsmtpd == 1


def test_empty_locals_file_means_no_locals(control: Path) -> None:
    write(control, "locals", "# nothing local\n")
    assert load_controls(control).locals == frozenset()


def test_empty_smtpgreeting_file_is_empty_greeting(control: Path) -> None:
    write(control, "smtpgreeting", "")
    assert load_controls(control).smtpgreeting == ""


def test_virtualdomains_split_at_first_colon_later_wins(control: Path) -> None:
    write(
        control,
        "virtualdomains",
        "Example.COM:example.com\nuser@x.org:alias-x\n.sub.net:sub\n:catch\n"
        "a.com:one:two\nexample.com:again\n",
    )
    c = load_controls(control)
    assert dict(c.virtualdomains) == {
        "example.com": "again",
        "user@x.org": "alias-x",
        ".sub.net": "sub",
        "": "catch",
        "a.com": "one:two",
    }


def test_controls_frozen(control: Path) -> None:
    c = load_controls(control)
    with pytest.raises(AttributeError):
        c.me = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        c.virtualdomains["x"] = "y"  # type: ignore[index]


# -- load_controls: problems ------------------------------------------------------------


def test_missing_me_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "control").mkdir()
    with pytest.raises(ConfigError) as info:
        load_controls(tmp_path / "control")
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith("control/me: missing")


def test_missing_control_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="control directory missing"):
        load_controls(tmp_path / "control")


def test_every_problem_reported_at_once(control: Path) -> None:
    write(control, "me", "")
    write(control, "databytes", "10M\n")
    write(control, "rcpthosts", "example.com\r\n")
    write(control, "virtualdomains", "no-colon-here\n")
    (control / "locals").mkdir()
    with pytest.raises(ConfigError) as info:
        load_controls(control)
    problems = info.value.problems
    assert len(problems) == 5, problems
    joined = "\n".join(problems)
    for expected in (
        "control/me: empty",
        "control/databytes: '10M' is not a plain decimal number (qmail would read it as 10)",
        "control/rcpthosts: line ends with a carriage return",
        "control/virtualdomains: 'no-colon-here' has no ':'",
        "control/locals: unable to read",
    ):
        assert expected in joined


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads anything")
def test_unreadable_file_is_a_problem(control: Path) -> None:
    path = write(control, "rcpthosts", "example.com\n")
    path.chmod(0)
    with pytest.raises(ConfigError, match="control/rcpthosts: unable to read"):
        load_controls(control)


# -- rcpthosts semantics (spec 3.5) -----------------------------------------------------


def rcpt(rcpthosts: set[str] | None, more: frozenset[str] = frozenset()) -> Controls:
    return Controls.for_me(
        "me.test",
        rcpthosts=None if rcpthosts is None else frozenset(rcpthosts),
        morercpthosts=more,
    )


def test_rcpthosts_exact_entry_matches_only_that_domain() -> None:
    c = rcpt({"example.com"})
    assert c.rcpthosts_allows("example.com")
    assert not c.rcpthosts_allows("sub.example.com")
    assert not c.rcpthosts_allows("badexample.com")
    assert not c.rcpthosts_allows("example.com.evil")


def test_rcpthosts_dot_entry_matches_subdomains_only() -> None:
    c = rcpt({".example.com"})
    assert c.rcpthosts_allows("a.example.com")
    assert c.rcpthosts_allows("a.b.example.com")
    assert not c.rcpthosts_allows("example.com")
    assert not c.rcpthosts_allows("aexample.com")


def test_rcpthosts_case_insensitive() -> None:
    assert rcpt({"example.com"}).rcpthosts_allows("EXAMPLE.Com")


def test_rcpthosts_file_lower_cased(control: Path) -> None:
    write(control, "rcpthosts", "Example.COM\n.Sub.Example.Org\n")
    c = load_controls(control)
    assert c.rcpthosts_allows("example.com")
    assert c.rcpthosts_allows("x.SUB.example.org")


def test_no_rcpthosts_file_allows_everything() -> None:
    assert rcpt(None).rcpthosts_allows("anything.example")


def test_empty_rcpthosts_allows_nothing_but_addresses_without_at() -> None:
    c = rcpt(set())
    assert not c.rcpthosts_allows("example.com")
    assert c.rcpthosts_allows("")


def test_morercpthosts_consulted_after_rcpthosts() -> None:
    c = rcpt({"a.com"}, frozenset({"b.com", ".c.com"}))
    assert c.rcpthosts_allows("a.com")
    assert c.rcpthosts_allows("B.com")
    assert c.rcpthosts_allows("x.c.com")
    assert not c.rcpthosts_allows("c.com")
    assert not c.rcpthosts_allows("d.com")


def test_morercpthosts_ignored_without_rcpthosts_file(control: Path) -> None:
    write(control, "morercpthosts", "b.com\n")
    c = load_controls(control)
    assert c.rcpthosts is None
    assert c.rcpthosts_allows("anything.org")  # open relay, as qmail


def test_morercpthosts_file(control: Path) -> None:
    write(control, "rcpthosts", "a.com\n")
    write(control, "morercpthosts", "# more\nB.com\n")
    c = load_controls(control)
    assert c.rcpthosts_allows("b.com")
    assert not c.rcpthosts_allows("e.com")


@pytest.mark.parametrize(
    ("listed", "asked"),
    [
        ("bücher.example", "xn--bcher-kva.example"),  # a U-label file matches an A-label RCPT
        ("xn--bcher-kva.example", "BÜCHER.example"),  # and the other way round
        (".bücher.example", "mail.XN--BCHER-KVA.example"),  # suffix entries too
    ],
)
def test_rcpthosts_u_labels_and_a_labels_are_one_domain(
    control: Path, listed: str, asked: str
) -> None:
    write(control, "morercpthosts", f"{listed}\n")
    write(control, "rcpthosts", "other.example\n")
    c = load_controls(control)
    assert c.rcpthosts_allows(asked)
    assert not c.rcpthosts_allows("buecher.example")


def test_locals_and_percenthack_keep_a_labels(control: Path) -> None:
    write(control, "locals", "Bücher.example\n")
    write(control, "percenthack", "münchen.example\n")
    c = load_controls(control)
    assert c.locals == frozenset({"xn--bcher-kva.example"})
    assert c.percenthack == frozenset({"xn--mnchen-3ya.example"})
