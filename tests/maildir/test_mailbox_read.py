"""Mailbox.read_small, RETR's fast path: the whole file in one read, or None to stream it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qtoaster.maildir.mailbox import Mailbox, MessageNumberError

T0 = 1_700_000_000


@pytest.fixture
def md(tmp_path: Path) -> Path:
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    for n, body in enumerate([b"one\n", b"", b"x" * 100], start=1):
        path = maildir / "new" / f"{T0 + n}.M1P1Q{n}.host"
        path.write_bytes(body)
        os.utime(path, (T0 + n, T0 + n))
    return maildir


def path_of(box: Mailbox, n: int) -> Path:
    return box.maildir / box.get(n).name


def test_reads_small_messages_whole(md: Path) -> None:
    box = Mailbox.open(md)
    assert box.read_small(1, 64) == b"one\n"
    assert box.read_small(2, 64) == b""
    assert box.read_small(3, 100) == b"x" * 100


def test_too_big_is_left_to_streaming(md: Path) -> None:
    assert Mailbox.open(md).read_small(3, 99) is None


def test_a_file_changed_since_the_scan_is_read_as_it_is_now(md: Path) -> None:
    box = Mailbox.open(md)
    path_of(box, 1).write_bytes(b"one\nmore\n")  # grew, within the limit
    assert box.read_small(1, 64) == b"one\nmore\n"
    path_of(box, 3).write_bytes(b"y" * 10)  # shrank
    assert box.read_small(3, 100) == b"y" * 10
    assert box.read_small(3, 64) is None  # the scan's size decides before any read
    path_of(box, 2).write_bytes(b"z" * 65)  # grew past the limit
    assert box.read_small(2, 64) is None


def test_numbers_are_checked_first(md: Path) -> None:
    box = Mailbox.open(md)
    box.delete(1)
    for n, text in [(0, "messages are counted from 1"), (4, "not that many messages")]:
        with pytest.raises(MessageNumberError, match=text):
            box.read_small(n, 64)
    with pytest.raises(MessageNumberError, match="already deleted"):
        box.read_small(1, 64)


def test_a_vanished_file_is_an_os_error(md: Path) -> None:
    box = Mailbox.open(md)
    path_of(box, 1).unlink()
    with pytest.raises(OSError):
        box.read_small(1, 64)
