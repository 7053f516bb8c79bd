"""maildir/watch.py and maildir/confine.py: inotify waits in process (one watch per
directory shared by its waiters and removed with the last; overflow wakes everyone; out
of watches a directory is polled), and the path checks confinement starts with."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

import pytest

from qtoaster.maildir import watch
from qtoaster.maildir.confine import PathError, check, open_root, resolve
from qtoaster.maildir.watch import InotifyWatcher, watch_count


@pytest.fixture
def maildir(tmp_path: Path) -> Path:
    for sub in ("cur", "new", "tmp"):
        (tmp_path / "Maildir" / sub).mkdir(parents=True)
    return tmp_path / "Maildir"


async def test_waiters_share_a_watch_and_wake_on_a_new_file(maildir: Path) -> None:
    watcher = InotifyWatcher(maildir)
    waits = [asyncio.create_task(watcher.wait(["new", "cur"], 30.0)) for _ in range(50)]
    await asyncio.sleep(0)
    assert watch_count() == 2  # two directories, 50 waiters
    (maildir / "new" / "m").write_bytes(b"x")
    assert await asyncio.wait_for(asyncio.gather(*waits), 5.0) == [True] * 50
    assert watch_count() == 0  # removed with their last waiter
    assert await watcher.wait(["new"], 0.05) is False
    assert await watcher.wait(["missing"], 0.05) is False
    (maildir / "cur" / "m").write_bytes(b"x")
    renaming = asyncio.create_task(watcher.wait(["cur"], 30.0))
    await asyncio.sleep(0)
    os.rename(maildir / "cur" / "m", maildir / "cur" / "m:2,S")
    assert await asyncio.wait_for(renaming, 5.0) is True
    cancelled = asyncio.create_task(watcher.wait(["cur"], 30.0))
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert watch_count() == 0
    watcher.close()


async def test_overflow_wakes_every_waiter(maildir: Path) -> None:
    watcher = InotifyWatcher(maildir)
    waits = [asyncio.create_task(watcher.wait([d], 30.0)) for d in ("new", "cur")]
    await asyncio.sleep(0)
    watch.hub()._wake_all()  # what an IN_Q_OVERFLOW event does
    assert await asyncio.wait_for(asyncio.gather(*waits), 5.0) == [True, True]


async def test_out_of_watches_falls_back_to_polling(
    maildir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = watch.hub()

    def refuse(path: str, mask: int) -> int:
        raise OSError(errno.ENOSPC, "no watches left")

    monkeypatch.setattr(hub.inotify, "add_watch", refuse)
    monkeypatch.setattr(watch, "POLL_SECONDS", 0.05)
    watcher = InotifyWatcher(maildir)
    waiting = asyncio.create_task(watcher.wait(["new"], 30.0))
    await asyncio.sleep(0.1)
    assert hub.warned and len(hub.polled) == 1
    (maildir / "new" / "m").write_bytes(b"x")
    assert await asyncio.wait_for(waiting, 5.0) is True
    assert not hub.polled  # its descriptor closed with its last waiter


async def test_a_link_is_not_watched(maildir: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (maildir / ".Evil").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(OSError):
        await InotifyWatcher(maildir).wait([".Evil"], 0.05)


@pytest.mark.parametrize(
    "rel", ["", "/etc", "..", "a/../b", "a//b", ".", "a/./b", "a\0b", "x/" * 20 + "y"]
)
def test_check_refuses(rel: str) -> None:
    with pytest.raises(PathError):
        check(rel)


def test_resolve_walks_without_links(maildir: Path, tmp_path: Path) -> None:
    assert check(".Sent/cur/1.M2:2,S") == [".Sent", "cur", "1.M2:2,S"]
    (maildir / "cur" / "inner").mkdir()
    (maildir / "hop").symlink_to(maildir / "cur", target_is_directory=True)
    root = open_root(str(maildir))
    try:
        parent, name = resolve(root, "cur/inner/file")
        try:
            assert name == "file" and os.path.samestat(
                os.fstat(parent), os.stat(maildir / "cur" / "inner")
            )
        finally:
            os.close(parent)
        with pytest.raises(OSError) as hop:
            resolve(root, "hop/inner/file")
        assert hop.value.errno in (errno.ELOOP, errno.ENOTDIR)
    finally:
        os.close(root)
