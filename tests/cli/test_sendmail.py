"""``qtoaster sendmail`` / ``qtoaster-sendmail``: flags, headers, envelope."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from qtoaster.cli.main import cli
from qtoaster.cli.sendmail import USAGE, UsageError, parse_args, run
from qtoaster.core.home import Home
from qtoaster.queue.store import QueuedMessage, QueueStore

NOW_ENV = {"USER": "joe", "PATH": os.environ.get("PATH", "")}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    root = tmp_path / "home"
    (root / "control").mkdir(parents=True)
    (root / "control" / "me").write_text("mx.example.com\n")
    QueueStore.create(root / "queue")
    return root


def send(home: Path, args: list[str], data: bytes, env: dict[str, str] | None = None) -> int:
    return run(args, io.BytesIO(data), NOW_ENV if env is None else env, Home(home))


def only(home: Path) -> tuple[QueuedMessage, bytes]:
    store = QueueStore(home / "queue")
    (qid,) = store.ids()
    msg = store.load(qid)
    data = msg.path.read_bytes()[msg.body_offset :]
    assert data.startswith(b"Received: (qmail ")
    return msg, data.split(b"\n", 1)[1]


def test_parse_args() -> None:
    opts = parse_args(["-oi", "-odb", "-f", "a@b", "-FJoe User", "-t", "-v", "x@y", "-z"])
    assert (opts.sender, opts.fullname, opts.from_headers, opts.dot_ends) == (
        "a@b",
        "Joe User",
        True,
        False,
    )
    assert opts.recipients == ["x@y", "-z"]  # options end at the first operand
    assert parse_args(["-it", "-fa@b", "--", "-r"]).recipients == ["-r"]
    assert parse_args(["-f<>"]).sender == ""
    assert parse_args(["--home", "/h", "r"]).home == "/h"
    for bad in (["-bs"], ["-f"], ["-Q"]):
        with pytest.raises(UsageError):
            parse_args(bad)


def test_adds_missing_headers_and_stops_at_dot(home: Path) -> None:
    assert send(home, ["bob@example.com"], b"Subject: hi\r\n\r\nline\r\n.\r\nafter\r\n") == 0
    msg, data = only(home)
    assert msg.envelope.sender == "joe@mx.example.com"
    assert msg.envelope.recipients == ("bob@example.com",)
    header, body = data.split(b"\n\n", 1)
    lines = header.split(b"\n")
    assert lines[0] == b"Subject: hi"
    assert lines[1].startswith(b"Date: ") and lines[1].endswith(b" -0000")
    assert lines[2].startswith(b"Message-ID: <") and lines[2].endswith(b".qmail@mx.example.com>")
    assert lines[3] == b"From: joe@mx.example.com"
    assert body == b"line\n"


def test_minus_i_keeps_dot_lines(home: Path) -> None:
    assert send(home, ["-i", "bob@example.com"], b"Subject: x\n\n.\nmore\n") == 0
    assert only(home)[1].endswith(b"\n\n.\nmore\n")


def test_minus_f_wins_over_environment(home: Path) -> None:
    env = {"QMAILUSER": "env", "QMAILHOST": "env.example", "QMAILNAME": "Env Name"}
    assert send(home, ["-f", "list@lists.example", "bob@example.com"], b"x: y\n\nb\n", env) == 0
    msg, data = only(home)
    assert msg.envelope.sender == "list@lists.example"
    assert b"\nFrom: list@lists.example\n" in data


def test_environment_and_fullname(home: Path) -> None:
    env = {"QMAILUSER": "u", "QMAILHOST": "h.example", "QMAILNAME": "Uma"}
    assert send(home, ["bob@example.com"], b"Subject: s\n\nb\n", env) == 0
    msg, data = only(home)
    assert msg.envelope.sender == "u@h.example"
    assert b"\nFrom: Uma <u@h.example>\n" in data


def test_minus_t_reads_recipients_and_removes_bcc(home: Path) -> None:
    data = (
        b"From: Me <me@example.org>\n"
        b"To: A <a@example.com>, b@example.com\n"
        b"Cc: c@example.com\n"
        b"Bcc: secret@example.com,\n"
        b"  hidden@example.com\n"
        b"Date: Mon, 1 Jan 2024 00:00:00 +0000\n"
        b"Message-ID: <x@y>\n"
        b"\n"
        b"body\n"
    )
    assert send(home, ["-t", "-f", "me@example.org"], data) == 0
    msg, out = only(home)
    assert msg.envelope.recipients == (
        "a@example.com",
        "b@example.com",
        "c@example.com",
        "secret@example.com",
        "hidden@example.com",
    )
    assert b"Bcc" not in out and b"hidden" not in out
    assert out.count(b"From:") == 1 and out.count(b"Date:") == 1


def test_no_recipients(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert send(home, [], b"Subject: x\n\nb\n") == 100
    assert "sendmail: fatal: no recipients" in capsys.readouterr().err
    assert QueueStore(home / "queue").ids() == []


@pytest.mark.parametrize(
    ("args", "data"),
    [
        (["-f", "a\rX-Injected: f@x.test", "b@example.com"], b"Subject: x\n\nb\n"),
        (["-fa@x.test\nX-Injected: f@x.test", "b@example.com"], b"Subject: x\n\nb\n"),
        (["b@example.com\rX-Injected: r@x.test"], b"Subject: x\n\nb\n"),
        (["b@example.com\0c@example.com"], b"Subject: x\n\nb\n"),
    ],
)
def test_cr_lf_nul_in_an_envelope_address_refused(
    home: Path, args: list[str], data: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    # issue 12 item 6: the address would end up in Return-Path / Delivered-To.
    assert send(home, args, data) == 100
    assert "sendmail: fatal: bad address syntax" in capsys.readouterr().err
    assert QueueStore(home / "queue").ids() == []


def test_minus_t_never_takes_a_cr_into_the_envelope(home: Path) -> None:
    # email.utils.getaddresses reads a CR in To: as white space between two addresses.
    data = b"To: b@example.com\rX-Injected: t@x.test\nSubject: x\n\nb\n"
    assert send(home, ["-t", "-f", "me@example.org"], data) == 0
    msg, _ = only(home)
    assert msg.envelope.recipients == ("b@example.com", "t@x.test")


def test_missing_controls(tmp_path: Path) -> None:
    assert send(tmp_path, ["a@b"], b"x\n") == 111


def test_click_command_passes_flags_through(home: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["sendmail", "--home", str(home), "-oi", "-f", "a@example.org", "bob@example.com"],
        input=b"Subject: c\n\n.\n",
        env={"USER": "joe"},
    )
    assert result.exit_code == 0, result.output
    msg, data = only(home)
    assert msg.envelope.sender == "a@example.org"
    assert data.endswith(b"\n\n.\n")


def test_console_script_main(home: Path) -> None:
    code = "import sys; from qtoaster.cli.sendmail import main; main(['--home', sys.argv[1], '-t'])"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(home)],
        input=b"To: bob@example.com\nSubject: s\n\nhi\n",
        capture_output=True,
        timeout=60,
        env={**os.environ, "USER": "joe"},
    )
    assert proc.returncode == 0, proc.stderr
    assert only(home)[0].envelope.recipients == ("bob@example.com",)


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_usage_and_exits_0(
    tmp_path: Path, flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # No home is needed (tmp_path has no control/me): help comes before anything is read.
    assert send(tmp_path, [flag], b"") == 0
    out, err = capsys.readouterr()
    assert out == USAGE and err == ""
    for option in ("--home DIR", "-f SENDER", "-F FULLNAME", "-t", "-i, -oi", "-h, --help"):
        assert option in out
    result = CliRunner().invoke(cli, ["sendmail", flag], input=b"")
    assert result.exit_code == 0 and result.output == USAGE
    assert parse_args(["-oi", flag]).help  # after other options too
    assert not parse_args(["bob@example.com", flag]).help  # an operand: a recipient


def test_usage_names_only_options_the_parser_accepts() -> None:
    for letters in ("f", "F", "t", "i", "o", "b", "v", "m", "x", "E", "J"):
        assert f"-{letters}" in USAGE
    parse_args(["-f", "a@b", "-F", "n", "-t", "-i", "-oi", "-bm", "-v", "-m", "-x", "-E", "-J"])
