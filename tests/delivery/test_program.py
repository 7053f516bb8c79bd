"""Program delivery (qmail-command(8), spec 16.3) with real ``sh`` programs."""

from __future__ import annotations

import io
import os
import signal
import time
from pathlib import Path

import pytest

from qtoaster.core.outcome import Outcome
from qtoaster.delivery.program import (
    CRASHED,
    REPORT_LIMIT,
    TIMEOUT,
    ProgramResult,
    qmail_env,
    run_program,
)

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
MESSAGE = b"Subject: hi\n\nhello\n"


def run(command: str, cwd: Path, message: bytes = MESSAGE, **kw: float) -> ProgramResult:
    return run_program(command, io.BytesIO(message), cwd=cwd, env=ENV, **kw)


@pytest.mark.parametrize(
    ("code", "outcome", "ignore_rest"),
    [
        (0, Outcome.SUCCESS, False),
        (99, Outcome.SUCCESS, True),
        (100, Outcome.PERMANENT, False),
        (64, Outcome.PERMANENT, False),
        (65, Outcome.PERMANENT, False),
        (70, Outcome.PERMANENT, False),
        (76, Outcome.PERMANENT, False),
        (77, Outcome.PERMANENT, False),
        (78, Outcome.PERMANENT, False),
        (112, Outcome.PERMANENT, False),
        (111, Outcome.TEMPORARY, False),
        (1, Outcome.TEMPORARY, False),
        (2, Outcome.TEMPORARY, False),
        (101, Outcome.TEMPORARY, False),
    ],
)
def test_exit_codes(tmp_path: Path, code: int, outcome: Outcome, ignore_rest: bool) -> None:
    assert run(f"exit {code}", tmp_path) == ProgramResult(outcome, "", ignore_rest)


def test_report_is_stdout_and_stderr(tmp_path: Path) -> None:
    result = run("echo out; echo err >&2; exit 100", tmp_path)
    assert result == ProgramResult(Outcome.PERMANENT, "out\nerr\n", False)


def test_report_truncated_to_limit(tmp_path: Path) -> None:
    # 2 MB of output: more than a pipe holds, so the program blocks unless we keep reading.
    result = run("head -c 2000000 /dev/zero | tr '\\0' x; exit 111", tmp_path)
    assert result == ProgramResult(Outcome.TEMPORARY, "x" * REPORT_LIMIT, False)


def test_killed_by_signal_is_temporary(tmp_path: Path) -> None:
    result = run("echo dying; kill -9 $$", tmp_path)
    assert result == ProgramResult(Outcome.TEMPORARY, "dying\n" + CRASHED, False)


def test_environment_is_exactly_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QTOASTER_LEAK", "leaked")
    env = {**ENV, "SENDER": "bob@example.org", "RECIPIENT": "alice@example.com"}
    result = run_program(
        'printf "%s|%s|%s|" "$SENDER" "$RECIPIENT" "${QTOASTER_LEAK-unset}"; pwd',
        io.BytesIO(b""),
        cwd=tmp_path,
        env=env,
    )
    assert result.report == f"bob@example.org|alice@example.com|unset|{tmp_path}\n"


def test_message_is_streamed_to_stdin(tmp_path: Path) -> None:
    message = os.urandom(5 * 1024 * 1024)
    result = run("cat > copy", tmp_path, message)
    assert result.outcome is Outcome.SUCCESS
    assert (tmp_path / "copy").read_bytes() == message


def test_stdin_starts_at_current_position(tmp_path: Path) -> None:
    source = io.BytesIO(b"queue header\n" + MESSAGE)
    source.seek(len(b"queue header\n"))
    run_program("cat > copy", source, cwd=tmp_path, env=ENV)
    assert (tmp_path / "copy").read_bytes() == MESSAGE


def test_program_that_ignores_stdin(tmp_path: Path) -> None:
    # More than a pipe buffer of message, never read: EPIPE must not hang or fail us.
    result = run("echo ok", tmp_path, b"x" * (4 * 1024 * 1024))
    assert result == ProgramResult(Outcome.SUCCESS, "ok\n", False)


def test_program_that_reads_part_of_stdin(tmp_path: Path) -> None:
    result = run("head -c 10 > part; exit 99", tmp_path, b"y" * (1024 * 1024))
    assert result == ProgramResult(Outcome.SUCCESS, "", True)
    assert (tmp_path / "part").read_bytes() == b"y" * 10


def gone(pid: int) -> bool:
    """Whether ``pid`` is dead (a zombie waiting for a reaper counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def test_background_child_holding_output_does_not_block(tmp_path: Path) -> None:
    started = time.monotonic()
    result = run("sleep 30 & echo $! > bg; echo done", tmp_path, timeout=10.0)
    assert result == ProgramResult(Outcome.SUCCESS, "done\n", False)
    assert time.monotonic() - started < 2.0
    os.kill(int((tmp_path / "bg").read_text()), signal.SIGKILL)


def test_program_that_closes_its_output_still_gets_all_input(tmp_path: Path) -> None:
    message = os.urandom(1024 * 1024)
    result = run("exec >/dev/null 2>&1; cat > copy", tmp_path, message)
    assert result == ProgramResult(Outcome.SUCCESS, "", False)
    assert (tmp_path / "copy").read_bytes() == message


def test_timeout_kills_the_process_group(tmp_path: Path) -> None:
    started = time.monotonic()
    command = "sleep 30 & echo $! > bg; echo started; sleep 30; echo never"
    result = run(command, tmp_path, timeout=0.3)
    assert time.monotonic() - started < 2.0
    assert result == ProgramResult(Outcome.TEMPORARY, "started\n" + TIMEOUT, False)
    background = int((tmp_path / "bg").read_text())
    deadline = time.monotonic() + 1.0  # SIGKILL is asynchronous: poll for the death
    while not gone(background) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gone(background)


def test_timeout_while_stdin_is_not_read(tmp_path: Path) -> None:
    # The child neither reads stdin nor exits: our writes block, the deadline still holds.
    started = time.monotonic()
    result = run("exec sleep 30", tmp_path, b"z" * (4 * 1024 * 1024), timeout=0.3)
    assert time.monotonic() - started < 2.0
    assert result == ProgramResult(Outcome.TEMPORARY, TIMEOUT, False)


def test_missing_cwd_is_temporary(tmp_path: Path) -> None:
    result = run("true", tmp_path / "gone")
    assert result.outcome is Outcome.TEMPORARY
    assert result.report.startswith(f"Unable to switch to {tmp_path / 'gone'}: ")
    assert result.report.endswith(". (#4.3.0)")


def test_unreadable_message_is_temporary(tmp_path: Path) -> None:
    class Broken(io.BytesIO):
        def read(self, size: int | None = -1, /) -> bytes:
            raise OSError(5, "Input/output error")

    started = time.monotonic()
    result = run_program("cat > /dev/null", Broken(), cwd=tmp_path, env=ENV)
    assert time.monotonic() - started < 2.0
    assert result == ProgramResult(
        Outcome.TEMPORARY, "Unable to read message: Input/output error. (#4.3.0)", False
    )


# qmail_env ----------------------------------------------------------------------------


def test_qmail_env_builds_every_variable() -> None:
    env = qmail_env(
        "bob@example.org",
        "example.com-john-list-a@example.com",
        "example.com-john-list-a",
        "mx.mail.example.com",
        "john-list-a",
        "list-a",
        "Delivered-To: example.com-john-list-a@example.com\n",
        "Return-Path: <bob@example.org>\n",
        user="vpopmail",
        home="/home/vpopmail/domains/example.com",
        now=0.0,
    )
    assert env == {
        "SENDER": "bob@example.org",
        "NEWSENDER": "bob@example.org",
        "RECIPIENT": "example.com-john-list-a@example.com",
        "USER": "vpopmail",
        "HOME": "/home/vpopmail/domains/example.com",
        "LOCAL": "example.com-john-list-a",
        "HOST": "mx.mail.example.com",
        "HOST2": "mx.mail.example",
        "HOST3": "mx.mail",
        "HOST4": "mx",
        "EXT": "john-list-a",
        "EXT2": "list-a",
        "EXT3": "a",
        "EXT4": "",
        "DEFAULT": "list-a",
        "DTLINE": "Delivered-To: example.com-john-list-a@example.com\n",
        "RPLINE": "Return-Path: <bob@example.org>\n",
        "UFLINE": "From bob@example.org Thu Jan 01 00:00:00 1970\n",
    }


def test_qmail_env_short_host_and_ext_and_no_default() -> None:
    env = qmail_env(
        "",
        "a@localhost",
        "a",
        "localhost",
        "",
        None,
        "dt",
        "rp",
        user="a",
        home="/h",
        newsender="a-owner@localhost",
        ufline="From x\n",
    )
    assert "DEFAULT" not in env
    assert [env[f"HOST{n}"] for n in (2, 3, 4)] == ["localhost"] * 3
    assert [env[k] for k in ("EXT", "EXT2", "EXT3", "EXT4")] == ["", "", "", ""]
    assert (env["NEWSENDER"], env["UFLINE"]) == ("a-owner@localhost", "From x\n")


def test_qmail_env_host_with_one_dot() -> None:
    env = qmail_env("", "", "", "example.com", "a-b", None, "", "", user="", home="")
    assert [env[f"HOST{n}"] for n in (2, 3, 4)] == ["example", "example", "example"]
    assert [env[f"EXT{n}"] for n in (2, 3, 4)] == ["b", "", ""]
    assert env["UFLINE"].startswith("From MAILER-DAEMON ")


def test_works_without_pidfd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Linux < 5.3 has no pidfd_open: the exchange then polls for the child's exit.
    monkeypatch.delattr(os, "pidfd_open")
    assert run("cat > copy; echo ok", tmp_path) == ProgramResult(Outcome.SUCCESS, "ok\n", False)
    assert (tmp_path / "copy").read_bytes() == MESSAGE
    started = time.monotonic()
    result = run("sleep 30 & echo $! > bg; exit 100", tmp_path, timeout=10.0)
    assert result == ProgramResult(Outcome.PERMANENT, "", False)
    assert time.monotonic() - started < 2.0
    os.kill(int((tmp_path / "bg").read_text()), signal.SIGKILL)
    started = time.monotonic()
    assert run("exec sleep 30", tmp_path, timeout=0.2).report == TIMEOUT
    assert time.monotonic() - started < 2.0
