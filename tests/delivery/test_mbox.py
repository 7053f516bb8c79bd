"""mbox delivery (spec 16.3, qmail-local mailfile()): From line, quoting, locking, rollback."""

from __future__ import annotations

import errno
import fcntl
import io
import os
import time
from pathlib import Path

import pytest

from qtoaster.delivery import mbox as mbox_module
from qtoaster.delivery.mbox import CHUNK, SLOW_LOCK, deliver_mbox, from_line

PREFIX = b"Return-Path: <bob@example.org>\nDelivered-To: alice@example.com\n"
NOW = 1_000_000_000.0  # Sun Sep  9 01:46:40 2001 UTC
FROM = b"From bob@example.org Sun Sep 09 01:46:40 2001\n"


def deliver(path: Path, body: bytes, sender: str = "bob@example.org") -> None:
    deliver_mbox(path, io.BytesIO(body), sender=sender, prefix=PREFIX, now=NOW)


def test_from_line_is_qmails_myctime() -> None:
    assert from_line("bob@example.org", NOW) == FROM
    assert from_line("", 0.0) == b"From MAILER-DAEMON Thu Jan 01 00:00:00 1970\n"
    assert from_line("a b\tc\nd", 0.0).startswith(b"From a-b-c-d Thu ")
    assert from_line("\udcff@x", 0.0).startswith(b"From \xff@x ")


def test_single_delivery_layout(tmp_path: Path) -> None:
    path = tmp_path / "mbox"
    deliver(path, b"Subject: hi\n\nhello\n")
    assert path.read_bytes() == FROM + PREFIX + b"Subject: hi\n\nhello\n\n"
    assert path.stat().st_mode & 0o777 == 0o600


def test_empty_sender_is_mailer_daemon(tmp_path: Path) -> None:
    path = tmp_path / "mbox"
    deliver(path, b"x\n", sender="")
    assert path.read_bytes().startswith(b"From MAILER-DAEMON Sun Sep 09 01:46:40 2001\n")


def test_from_quoting_like_gfrom(tmp_path: Path) -> None:
    path = tmp_path / "mbox"
    body = b"Subject: q\n\nFrom here\n>From there\n>>From x\n From no\nFrom\nFromage\n>>>\n>From"
    deliver(path, body)
    expected = (
        b"Subject: q\n\n>From here\n>>From there\n>>>From x\n From no\nFrom\nFromage\n"
        b">>>\n>From\n\n"
    )
    assert path.read_bytes() == FROM + PREFIX + expected


def test_last_line_without_newline_gets_one(tmp_path: Path) -> None:
    path = tmp_path / "mbox"
    deliver(path, b"Subject: x\n\nno newline")
    assert path.read_bytes().endswith(b"\nno newline\n\n")


def test_empty_message(tmp_path: Path) -> None:
    path = tmp_path / "mbox"
    deliver(path, b"")
    assert path.read_bytes() == FROM + PREFIX + b"\n"


def test_streams_from_current_position(tmp_path: Path) -> None:
    path = tmp_path / "mbox"
    source = io.BytesIO(b"queue header\nSubject: s\n\nb\n")
    source.seek(len(b"queue header\n"))
    deliver_mbox(path, source, sender="", prefix=b"", now=NOW)
    assert path.read_bytes().endswith(b"\nSubject: s\n\nb\n\n")


def test_long_lines_and_quoting_across_chunk_boundaries(tmp_path: Path) -> None:
    path = tmp_path / "mbox"
    long_line = b"x" * (3 * CHUNK + 7) + b"\n"
    # A line of more than CHUNK '>' then "From ": still quoted, '>' count preserved.
    gts = b">" * (CHUNK + 3) + b"From far\n"
    # "From " split by the CHUNK boundary of readline().
    split = b"y" * (CHUNK - 1) + b"\n" + b"From split\n"
    body = long_line + gts + long_line.replace(b"x", b"F") + split + b"From " + long_line
    deliver(path, body)
    stored = path.read_bytes()[len(FROM + PREFIX) :]
    expected = (
        long_line
        + b">" + gts
        + long_line.replace(b"x", b"F")
        + b"y" * (CHUNK - 1) + b"\n>From split\n"
        + b">From " + long_line + b"\n"
    )  # fmt: skip
    assert stored == expected


def test_two_deliveries_append(tmp_path: Path) -> None:
    path = tmp_path / "mbox"
    deliver(path, b"Subject: one\n\n1\n")
    deliver(path, b"Subject: two\n\n2\n", sender="")
    assert path.read_bytes() == (
        FROM + PREFIX + b"Subject: one\n\n1\n\n"
        b"From MAILER-DAEMON Sun Sep 09 01:46:40 2001\n" + PREFIX + b"Subject: two\n\n2\n\n"
    )


def test_write_error_truncates_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "mbox"
    deliver(path, b"Subject: one\n\n1\n")
    before = path.read_bytes()
    real = mbox_module._write_all
    calls = 0

    def failing(fd: int, data: bytes) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:  # the first buffer lands, the second fails half written
            real(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data)

    monkeypatch.setattr(mbox_module, "_write_all", failing)
    body = b"Subject: big\n\n" + b"line\n" * (3 * CHUNK // 5)
    with pytest.raises(OSError) as info:
        deliver(path, body)
    assert info.value.errno == errno.ENOSPC
    assert calls == 2
    assert path.read_bytes() == before


def test_read_error_truncates_back(tmp_path: Path) -> None:
    path = tmp_path / "mbox"
    deliver(path, b"Subject: one\n\n1\n")
    before = path.read_bytes()

    class Broken(io.BytesIO):
        def readline(self, size: int | None = -1, /) -> bytes:
            if self.tell() > 10:
                raise OSError(errno.EIO, "Input/output error")
            return super().readline(size)

    with pytest.raises(OSError):
        deliver_mbox(path, Broken(b"Subject: x\n\nbody\n"), sender="", prefix=PREFIX)
    assert path.read_bytes() == before


def test_lock_timeout(tmp_path: Path) -> None:
    path = tmp_path / "mbox"
    deliver(path, b"Subject: one\n\n1\n")
    before = path.read_bytes()
    with open(path, "ab") as holder:
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
        started = time.monotonic()
        with pytest.raises(TimeoutError) as info:
            deliver_mbox(path, io.BytesIO(b"x\n"), sender="", prefix=b"", lock_timeout=0.2)
        elapsed = time.monotonic() - started
    assert info.value.strerror == SLOW_LOCK
    assert 0.2 <= elapsed < 1.5
    assert path.read_bytes() == before


def test_waits_for_a_lock_released_in_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "mbox"
    holder = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    fcntl.flock(holder, fcntl.LOCK_EX)
    pauses: list[float] = []

    def release_instead_of_sleeping(seconds: float) -> None:
        if not pauses:
            os.close(holder)  # the other writer finishes while we wait
        pauses.append(seconds)

    monkeypatch.setattr(time, "sleep", release_instead_of_sleeping)
    deliver(path, b"x\n")
    assert len(pauses) == 1
    assert path.read_bytes() == FROM + PREFIX + b"x\n\n"


def test_missing_directory_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        deliver(tmp_path / "nope" / "mbox", b"x\n")
