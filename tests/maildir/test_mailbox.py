"""The POP3 Maildir snapshot: order, UIDL, wire sizes, size cache, DELE/RSET, TOP, UPDATE."""

from __future__ import annotations

import builtins
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest

from qtoaster.maildir import mailbox as mailbox_module
from qtoaster.maildir.mailbox import (
    INDEX_FILE,
    Mailbox,
    MailboxError,
    MessageNumberError,
    wire_size,
)

T0 = 1_700_000_000


def make_maildir(path: Path) -> Path:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True)
    return path


def put(maildir: Path, name: str, content: bytes, mtime: float = T0) -> Path:
    path = maildir / name
    path.write_bytes(content)
    os.utime(path, (mtime, mtime))
    return path


def reference_wire(data: bytes) -> bytes:
    """The wire form, written the obvious way (mailbox module docstring)."""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # the LF ending the last line starts no further line
    out = []
    for line in lines:
        if line.endswith(b"\r"):
            line = line[:-1]
        out.append(line + b"\r\n")
    return b"".join(out)


@pytest.fixture
def md(tmp_path: Path) -> Path:
    return make_maildir(tmp_path / "Maildir")


class OpenCounter:
    """Counts opens of message files (new/ and cur/) through builtins.open."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self._real = builtins.open

    def __call__(self, file: Any, *args: Any, **kwargs: Any) -> Any:
        text = os.fspath(file) if isinstance(file, (str, os.PathLike)) else ""
        if "/new/" in text or "/cur/" in text:
            self.paths.append(text)
        return self._real(file, *args, **kwargs)


# --- listing ------------------------------------------------------------------------------


def test_order_by_mtime_then_name_numbered_from_1(md: Path) -> None:
    put(md, "new/300.M1P1Q1.h,S=3", b"c\n", T0 + 30)
    put(md, "cur/100.M1P1Q1.h,S=3:2,S", b"a\n", T0 + 10)
    put(md, "new/200.M2P1Q1.h,S=3", b"b\n", T0 + 20)
    put(md, "new/200.M1P1Q1.h,S=3", b"b\n", T0 + 20)
    put(md, "new/.hidden", b"x\n", T0)  # qmail's maildir_scan skips dot files
    (md / "cur" / "adir").mkdir()
    box = Mailbox.open(md)
    assert [(m.number, m.name) for m in box.messages] == [
        (1, "cur/100.M1P1Q1.h,S=3:2,S"),
        (2, "new/200.M1P1Q1.h,S=3"),
        (3, "new/200.M2P1Q1.h,S=3"),
        (4, "new/300.M1P1Q1.h,S=3"),
    ]


def test_uid_drops_directory_and_info(md: Path) -> None:
    put(md, "cur/1.M1P1Q1.host,S=2:2,RS", b"a\n", T0)
    put(md, "new/2.M1P1Q1.host,S=2", b"b\n", T0 + 1)
    box = Mailbox.open(md)
    assert [m.uid for m in box.messages] == ["1.M1P1Q1.host,S=2", "2.M1P1Q1.host,S=2"]


def test_empty_maildir(md: Path) -> None:
    box = Mailbox.open(md)
    assert box.messages == [] and box.stat() == (0, 0)


def test_no_maildir(tmp_path: Path) -> None:
    with pytest.raises(MailboxError) as caught:
        Mailbox.open(tmp_path / "nothing")
    assert caught.value.text == "this user has no $HOME/Maildir"


def test_unscannable_maildir(md: Path) -> None:
    (md / "cur").rmdir()
    with pytest.raises(MailboxError) as caught:
        Mailbox.open(md)
    assert caught.value.text == "unable to scan $HOME/Maildir"


def test_tmp_cleanup_by_age(md: Path) -> None:
    now = T0 + 1_000_000.0
    old = put(md, "tmp/old", b"x", now - 36 * 3600 - 1)
    edge = put(md, "tmp/edge", b"x", now - 36 * 3600)
    young = put(md, "tmp/young", b"x", now - 3600)
    read_recently = put(md, "tmp/read", b"x", now - 40 * 3600)
    os.utime(read_recently, (now - 60, now - 40 * 3600))  # atime recent: still in use
    Mailbox.open(md, now=now)
    assert not old.exists()
    assert edge.exists() and young.exists() and read_recently.exists()


# --- sizes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"", b"a\n", b"a", b"a\r\n", b"a\r", b"\n\n", b"\r\n\r\n", b"a\r\r\n", b"x\ny\r\nz", b"\r"],
)
def test_wire_size_edge_cases(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "m"
    path.write_bytes(data)
    assert wire_size(path) == len(reference_wire(data))


def test_wire_size_random_against_reference(tmp_path: Path) -> None:
    rng = random.Random(5)
    path = tmp_path / "m"
    for _ in range(300):
        data = bytes(rng.choice(b"ab\r\n.") for _ in range(rng.randrange(0, 200)))
        path.write_bytes(data)
        assert wire_size(path) == len(reference_wire(data)), data


def test_wire_size_crlf_across_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mailbox_module, "CHUNK", 4)
    path = tmp_path / "m"
    rng = random.Random(7)
    for _ in range(200):
        data = bytes(rng.choice(b"a\r\n") for _ in range(rng.randrange(0, 40)))
        path.write_bytes(data)
        assert wire_size(path) == len(reference_wire(data)), data


def test_listing_sizes_are_wire_sizes(md: Path) -> None:
    put(md, "new/1.M1P1Q1.h,S=12", b"A: b\n\nbody\nx", T0)
    box = Mailbox.open(md)
    assert box.messages[0].size == len(b"A: b\r\n\r\nbody\r\nx\r\n")


# --- the size cache -----------------------------------------------------------------------


def test_second_open_reads_no_message(md: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(5):
        put(md, f"new/{i}.M1P1Q1.h", b"line\n" * (i + 1), T0 + i)
    first = Mailbox.open(md)
    assert (md / INDEX_FILE).exists()
    counter = OpenCounter()
    monkeypatch.setattr(builtins, "open", counter)
    second = Mailbox.open(md)
    assert counter.paths == []
    assert second.messages == first.messages
    put(md, "new/9.M1P1Q1.h", b"new\n", T0 + 9)
    third = Mailbox.open(md)
    assert [Path(p).name for p in counter.paths] == ["9.M1P1Q1.h"]
    assert third.messages[-1].size == 5


def test_cache_survives_move_to_cur(md: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    put(md, "new/1.M1P1Q1.h", b"a\nb\n", T0)
    Mailbox.open(md).commit()
    counter = OpenCounter()
    monkeypatch.setattr(builtins, "open", counter)
    box = Mailbox.open(md)
    assert counter.paths == [] and box.messages[0].name == "cur/1.M1P1Q1.h:2,"
    assert box.messages[0].size == 6


@pytest.mark.parametrize(
    "garbage",
    [b"", b"\xff\x00garbage", b"qtoaster-pop3-sizes 1\n1.M1P1Q1.h\t4\t999\ncrc 00000000\n"],
)
def test_garbage_cache_is_ignored(md: Path, garbage: bytes) -> None:
    put(md, "new/1.M1P1Q1.h", b"a\nb\n", T0)
    (md / INDEX_FILE).write_bytes(garbage)
    assert Mailbox.open(md).messages[0].size == 6
    assert Mailbox.open(md).messages[0].size == 6  # and the rewritten cache is good


def test_torn_cache_is_ignored(md: Path) -> None:
    put(md, "new/1.M1P1Q1.h", b"a\nb\n", T0)
    Mailbox.open(md)
    data = (md / INDEX_FILE).read_bytes()
    (md / INDEX_FILE).write_bytes(data.replace(b"\t6\n", b"\t5\n"))  # wire size altered
    assert Mailbox.open(md).messages[0].size == 6


def test_cache_entry_with_other_disk_size_is_not_used(md: Path) -> None:
    path = put(md, "new/1.M1P1Q1.h", b"a\nb\n", T0)
    Mailbox.open(md)
    path.write_bytes(b"a\nb\nc\n")
    assert Mailbox.open(md).messages[0].size == 9


def test_cache_drops_vanished_messages(md: Path) -> None:
    put(md, "new/1.M1P1Q1.h", b"a\n", T0)
    gone = put(md, "new/2.M1P1Q1.h", b"b\n", T0 + 1)
    Mailbox.open(md)
    gone.unlink()
    Mailbox.open(md)
    assert b"2.M1P1Q1.h" not in (md / INDEX_FILE).read_bytes()


def test_unwritable_cache_is_not_an_error(md: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    put(md, "new/1.M1P1Q1.h", b"a\n", T0)

    def refuse(src: object, dst: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)
    assert Mailbox.open(md).messages[0].size == 3
    assert os.listdir(md / "tmp") == []


# --- STAT, DELE, RSET, LAST, message numbers ----------------------------------------------


@pytest.fixture
def box3(md: Path) -> Mailbox:
    put(md, "new/1.M1P1Q1.h,S=2", b"a\n", T0)
    put(md, "new/2.M1P1Q1.h,S=3", b"bb\n", T0 + 1)
    put(md, "cur/3.M1P1Q1.h,S=4:2,S", b"ccc\n", T0 + 2)
    return Mailbox.open(md)


def test_stat_after_dele_and_rset(box3: Mailbox) -> None:
    assert box3.stat() == (3, 3 + 4 + 5)
    box3.delete(2)
    assert box3.stat() == (2, 3 + 5)  # the pop3d-stat fix: the count excludes deleted too
    assert [m.number for m in box3.undeleted()] == [1, 3]
    assert box3.is_deleted(2) and box3.last == 2
    box3.delete(1)
    assert box3.last == 2  # LAST = max(LAST, n)
    box3.reset()
    assert box3.stat() == (3, 12) and box3.last == 0 and not box3.is_deleted(2)


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "messages are counted from 1"), (-1, "messages are counted from 1"),
     (4, "not that many messages")],
)  # fmt: skip
def test_message_number_errors(box3: Mailbox, n: int, text: str) -> None:
    with pytest.raises(MessageNumberError) as caught:
        box3.get(n)
    assert caught.value.text == text


def test_deleted_message_errors(box3: Mailbox) -> None:
    box3.delete(1)
    for action in (box3.get, box3.delete, box3.open_message):
        with pytest.raises(MessageNumberError) as caught:
            action(1)
        assert caught.value.text == "already deleted"


def test_open_message_streams_stored_bytes(box3: Mailbox) -> None:
    with box3.open_message(2) as stream:
        assert stream.read() == b"bb\n"


def test_open_message_vanished_is_oserror(md: Path, box3: Mailbox) -> None:
    (md / "new/1.M1P1Q1.h,S=2").unlink()
    with pytest.raises(OSError):
        box3.open_message(1)


# --- TOP ----------------------------------------------------------------------------------

MESSAGE = b"Subject: x\nFrom: a@b\n\none\ntwo\nthree\n"


@pytest.mark.parametrize(
    ("k", "expected"),
    [
        (0, [b"Subject: x\n", b"From: a@b\n", b"\n"]),
        (2, [b"Subject: x\n", b"From: a@b\n", b"\n", b"one\n", b"two\n"]),
        (3, MESSAGE.splitlines(keepends=True)),
        (99, MESSAGE.splitlines(keepends=True)),
        (None, MESSAGE.splitlines(keepends=True)),
    ],
)
def test_top(md: Path, k: int | None, expected: list[bytes]) -> None:
    put(md, "new/1.M1P1Q1.h", MESSAGE, T0)
    assert list(Mailbox.open(md).top_lines(1, k)) == expected


def test_top_without_trailing_newline(md: Path) -> None:
    put(md, "new/1.M1P1Q1.h", b"A: b\n\nlast", T0)
    box = Mailbox.open(md)
    assert list(box.top_lines(1, 5)) == [b"A: b\n", b"\n", b"last"]
    assert list(box.top_lines(1, 0)) == [b"A: b\n", b"\n"]
    assert box.messages[0].size == len(b"A: b\r\n\r\nlast\r\n")


def test_top_crlf_stored_and_headers_only(md: Path) -> None:
    put(md, "new/1.M1P1Q1.h", b"A: b\r\n\r\nbody\r\n", T0)
    put(md, "new/2.M1P1Q1.h", b"A: b\nC: d\n", T0 + 1)
    box = Mailbox.open(md)
    assert list(box.top_lines(1, 0)) == [b"A: b\r\n", b"\r\n"]
    assert list(box.top_lines(2, 0)) == [b"A: b\n", b"C: d\n"]


def test_top_negative_count(box3: Mailbox) -> None:
    with pytest.raises(ValueError):
        box3.top_lines(1, -1)


# --- UPDATE -------------------------------------------------------------------------------


def test_commit(md: Path) -> None:
    (md / "maildirsize").write_bytes(b"1000S\n100 3\n")
    put(md, "new/1.M1P1Q1.h,S=40", b"a\n", T0)  # ,S= counts, not the disk size
    put(md, "new/2.M1P1Q1.h", b"bbbb\n", T0 + 1)  # no ,S=: stat size (5)
    put(md, "new/3.M1P1Q1.h,S=9", b"kept\n", T0 + 2)
    put(md, "cur/4.M1P1Q1.h,S=9:2,S", b"seen\n", T0 + 3)
    box = Mailbox.open(md)
    box.delete(1)
    box.delete(2)
    assert box.commit() == []
    assert sorted(os.listdir(md / "new")) == []
    assert sorted(os.listdir(md / "cur")) == ["3.M1P1Q1.h,S=9:2,", "4.M1P1Q1.h,S=9:2,S"]
    assert (md / "maildirsize").read_bytes() == b"1000S\n100 3\n-45 -2\n"
    assert box.commit() == []  # a second commit does nothing


def test_commit_without_maildirsize_creates_none(md: Path) -> None:
    put(md, "new/1.M1P1Q1.h,S=2", b"a\n", T0)
    box = Mailbox.open(md)
    box.delete(1)
    assert box.commit() == []
    assert not (md / "maildirsize").exists() and os.listdir(md / "new") == []


def test_commit_goes_on_after_unlink_failure(md: Path) -> None:
    (md / "maildirsize").write_bytes(b"1000S\n")
    put(md, "new/1.M1P1Q1.h,S=2", b"a\n", T0)
    put(md, "new/2.M1P1Q1.h,S=3", b"bb\n", T0 + 1)
    put(md, "new/3.M1P1Q1.h,S=4", b"ccc\n", T0 + 2)
    box = Mailbox.open(md)
    box.delete(1)
    box.delete(2)
    (md / "new/1.M1P1Q1.h,S=2").unlink()  # gone behind our back
    problems = box.commit()
    assert len(problems) == 1 and "1.M1P1Q1.h,S=2" in problems[0]
    assert os.listdir(md / "new") == [] and os.listdir(md / "cur") == ["3.M1P1Q1.h,S=4:2,"]
    assert (md / "maildirsize").read_bytes() == b"1000S\n-3 -1\n"


def test_no_commit_no_change(md: Path) -> None:
    (md / "maildirsize").write_bytes(b"1000S\n")
    put(md, "new/1.M1P1Q1.h,S=2", b"a\n", T0)
    put(md, "cur/2.M1P1Q1.h,S=2:2,", b"b\n", T0 + 1)
    box = Mailbox.open(md)
    box.delete(1)
    box.delete(2)
    del box  # connection dropped: no UPDATE state (RFC 1939 section 6)
    assert os.listdir(md / "new") == ["1.M1P1Q1.h,S=2"]
    assert os.listdir(md / "cur") == ["2.M1P1Q1.h,S=2:2,"]
    assert (md / "maildirsize").read_bytes() == b"1000S\n"


# --- scale --------------------------------------------------------------------------------


def test_20000_messages_open_fast_on_warm_cache(md: Path) -> None:
    body = b"Subject: hi\n\n" + b"a line of text\n" * 20
    new = os.fspath(md / "new")
    for i in range(20_000):
        fd = os.open(f"{new}/{T0 + i}.M{i}P1Q1.h,S={len(body)}", os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, body)
        os.close(fd)
    cold_start = time.perf_counter()
    cold = Mailbox.open(md)
    cold_time = time.perf_counter() - cold_start
    warm_start = time.perf_counter()
    warm = Mailbox.open(md)
    warm_time = time.perf_counter() - warm_start
    print(f"20000 messages: cold open {cold_time:.3f}s, warm open {warm_time:.3f}s")
    assert warm.stat() == cold.stat() == (20_000, 20_000 * (len(body) + 22))
    assert warm_time < 1.0


def test_imap_rename_meanwhile(tmp_path: Path) -> None:
    """An IMAP session changing flags renames the file in cur/ between POP3's scan and
    RETR/DELE: POP3 finds it by its unique name, neither losing nor keeping it twice."""
    maildir = make_maildir(tmp_path / "Maildir")
    (maildir / "cur" / "1.M1P1.h:2,").write_bytes(b"a\n")
    (maildir / "new" / "2.M1P1.h").write_bytes(b"b\n")
    box = Mailbox.open(maildir)
    os.rename(maildir / "cur" / "1.M1P1.h:2,", maildir / "cur" / "1.M1P1.h:2,S")
    os.rename(maildir / "new" / "2.M1P1.h", maildir / "cur" / "2.M1P1.h:2,F")
    numbers = {m.uid: m.number for m in box.messages}
    with box.open_message(numbers["1.M1P1.h"]) as stream:
        assert stream.read() == b"a\n"
    assert box.read_small(numbers["2.M1P1.h"], 100) == b"b\n"
    box.delete(numbers["1.M1P1.h"])
    assert box.commit() == []
    assert sorted(os.listdir(maildir / "cur")) == ["2.M1P1.h:2,F"]
    assert os.listdir(maildir / "new") == []
