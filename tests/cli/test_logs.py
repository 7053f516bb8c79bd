"""cli.logs: the frame of every line (docs/logging.md)."""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

import pytest

from qtoaster.cli.logs import LineFormatter, stderr_is_journal


def record(msg: str, *args: object, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("q", level, "", 0, msg, args, None)


def test_iso_time_with_milliseconds_and_offset() -> None:
    line = LineFormatter("smtpd#0", 42).format(record("accepted %s", "msg=q1"))
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d smtpd#0\[42\] INFO accepted msg=q1",
        line,
    ), line


def test_journald_gets_the_priority_and_no_time() -> None:
    fmt = LineFormatter("send", 7, journal=True)
    assert fmt.format(record("end.msg msg=q1")) == "<6>send[7] INFO end.msg msg=q1"
    assert fmt.format(record("x", level=logging.WARNING)).startswith("<4>send[7] WARNING")


def test_no_line_break_reaches_a_line() -> None:
    fmt = LineFormatter("send", 7)
    assert "\n" not in fmt.format(record("supervisor %s", "a\nb\r\nc"))
    try:
        raise RuntimeError("bug\nhere")
    except RuntimeError:
        rec = record("internal-error where=x")
        rec.exc_info = sys.exc_info()
    line = fmt.format(rec)
    assert "\n" not in line and ' traceback="Traceback (most recent call last):\\n' in line


def test_journal_stream_must_name_stderr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with open(tmp_path / "err", "w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert stderr_is_journal(stream)
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")
        assert not stderr_is_journal(stream)
