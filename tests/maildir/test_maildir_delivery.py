"""Maildir++ delivery: byte-exact files in new/, the ,S= size, no tmp leftovers, errors."""

from __future__ import annotations

import io
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from qtoaster.maildir import deliver as maildir_module
from qtoaster.maildir.deliver import CHUNK, deliver_maildir, unique_name

PREFIX = b"Return-Path: <bob@example.org>\nDelivered-To: alice@example.com\n"
BODY = b"Subject: hi\n\nhello\n"
NAME = re.compile(r"^(\d+)\.M(\d{1,6})P(\d+)Q(\d+)\.(.+),S=(\d+)$")


def make_maildir(path: Path) -> Path:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True)
    return path


@pytest.fixture
def maildir(tmp_path: Path) -> Path:
    return make_maildir(tmp_path / "Maildir")


@pytest.mark.parametrize("fsync", [True, False])
def test_delivery_is_byte_exact_in_new(maildir: Path, fsync: bool) -> None:
    name = deliver_maildir(maildir, io.BytesIO(BODY), PREFIX, fsync=fsync, hostname="mx.test")
    assert os.listdir(maildir / "new") == [name]
    assert os.listdir(maildir / "tmp") == []
    assert os.listdir(maildir / "cur") == []
    stored = (maildir / "new" / name).read_bytes()
    assert stored == PREFIX + BODY
    match = NAME.match(name)
    assert match is not None
    assert int(match.group(3)) == os.getpid()
    assert match.group(5) == "mx.test"
    assert int(match.group(6)) == len(stored)  # the size includes the prefix (spec 21.2)
    assert oct((maildir / "new" / name).stat().st_mode & 0o777) == oct(0o600)


def test_large_message_is_streamed_in_chunks(maildir: Path) -> None:
    body = bytes(range(256)) * (3 * CHUNK // 256) + b"tail"
    reads: list[int] = []

    class Recording(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            assert size is not None and 0 < size <= CHUNK  # never the whole message at once
            reads.append(size)
            return super().read(size)

    name = deliver_maildir(maildir, Recording(body), PREFIX, hostname="h")
    assert (maildir / "new" / name).read_bytes() == PREFIX + body
    assert name.endswith(f",S={len(PREFIX) + len(body)}")
    assert len(reads) >= 4


def test_source_position_is_respected(maildir: Path) -> None:
    source = io.BytesIO(b"ENVELOPE-JUNK" + BODY)
    source.seek(len(b"ENVELOPE-JUNK"))
    name = deliver_maildir(maildir, source, b"", hostname="h")
    assert (maildir / "new" / name).read_bytes() == BODY


def test_unique_names_do_not_collide_between_threads() -> None:
    names: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        mine = [unique_name("h") for _ in range(500)]
        with lock:
            names.extend(mine)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(names)) == 2000


def test_host_name_slash_and_colon_are_escaped() -> None:
    name = unique_name("a/b:c")
    assert name.endswith(".a\\057b\\072c")
    assert "/" not in name and ":" not in name


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_maildir_raises(maildir: Path) -> None:
    os.chmod(maildir / "tmp", 0o500)
    try:
        with pytest.raises(PermissionError):
            deliver_maildir(maildir, io.BytesIO(BODY), PREFIX, hostname="h")
    finally:
        os.chmod(maildir / "tmp", 0o700)
    assert os.listdir(maildir / "new") == []


def test_unusable_tmp_raises(maildir: Path) -> None:
    (maildir / "tmp").rmdir()
    (maildir / "tmp").write_bytes(b"")  # a file where tmp/ should be: fails even for root
    with pytest.raises(NotADirectoryError):
        deliver_maildir(maildir, io.BytesIO(BODY), PREFIX, hostname="h")
    assert os.listdir(maildir / "new") == []


def test_failed_link_leaves_no_tmp_file(maildir: Path) -> None:
    (maildir / "new").rmdir()
    with pytest.raises(FileNotFoundError):
        deliver_maildir(maildir, io.BytesIO(BODY), PREFIX, hostname="h")
    assert os.listdir(maildir / "tmp") == []


def test_failed_read_leaves_nothing(maildir: Path) -> None:
    class Broken(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            raise OSError(5, "Input/output error")

    with pytest.raises(OSError, match="Input/output"):
        deliver_maildir(maildir, Broken(), PREFIX, hostname="h")
    assert os.listdir(maildir / "tmp") == []
    assert os.listdir(maildir / "new") == []


def test_existing_tmp_name_is_retried(maildir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names = iter(["taken", "taken", "free"])
    monkeypatch.setattr(maildir_module, "unique_name", lambda host: next(names))
    (maildir / "tmp" / "taken").write_bytes(b"")
    name = deliver_maildir(maildir, io.BytesIO(BODY), PREFIX, hostname="h")
    assert name == f"free,S={len(PREFIX) + len(BODY)}"


def test_gives_up_after_three_taken_names(maildir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(maildir_module, "unique_name", lambda host: "taken")
    (maildir / "tmp" / "taken").write_bytes(b"")
    with pytest.raises(FileExistsError):
        deliver_maildir(maildir, io.BytesIO(BODY), PREFIX, hostname="h")
    assert os.listdir(maildir / "tmp") == ["taken"]  # the other file is left alone


def test_first_delivery_removes_litter_of_dead_writers(maildir: Path) -> None:
    # Issue 12: a delivery killed mid-write left its partial in tmp/ for good.
    child = subprocess.Popen(["true"])
    child.wait()
    dead = child.pid  # reaped: no process has this pid now
    tmp = maildir / "tmp"
    now = time.time()
    ours_dead = tmp / f"{int(now)}.M1P{dead}Q1.mx.test"
    ours_alive = tmp / f"{int(now)}.M2P1Q1.mx.test"  # pid 1 lives: maybe still writing
    ours_self = tmp / f"{int(now)}.M3P{os.getpid()}Q1.mx.test"
    other_host = tmp / f"{int(now)}.M4P{dead}Q1.other.test"  # not ours to judge
    foreign = tmp / "1700000000.12345_1.other.test"
    old = tmp / "ancient"
    for path in (ours_dead, ours_alive, ours_self, other_host, foreign, old):
        path.write_bytes(b"partial")
    os.utime(old, (now - 36 * 3600 - 10, now - 36 * 3600 - 10))
    deliver_maildir(maildir, io.BytesIO(BODY), PREFIX, hostname="mx.test")
    assert sorted(os.listdir(tmp)) == sorted(
        p.name for p in (ours_alive, ours_self, other_host, foreign)
    )
    # Once per Maildir and process: later deliveries do not list tmp/ again.
    ours_dead.write_bytes(b"partial")
    deliver_maildir(maildir, io.BytesIO(BODY), PREFIX, hostname="mx.test")
    assert ours_dead.exists()
