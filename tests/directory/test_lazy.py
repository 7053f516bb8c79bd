"""LazyDirectory: opened on first use and reopened after a database error."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from qtoaster.core.errors import TemporaryFailure
from qtoaster.core.home import Home
from qtoaster.directory.cache import CachedLookups
from qtoaster.directory.lazy import LazyDirectory
from qtoaster.directory.store import Directory, create_directory


def _corrupt(path: Path, good: bytes) -> None:
    # In place, past the 100-byte header: the file keeps its size and inode.
    with open(path, "r+b") as f:
        f.seek(100)
        f.write(b"\xff" * (len(good) - 100))


def _hosted(cache: CachedLookups, address: str) -> bool:
    try:
        recipient = cache.resolve(address)
    except TemporaryFailure:
        return False
    return recipient is not None and recipient.user is not None


def test_restored_sqlite_file_is_read_again_without_a_restart(tmp_path: Path) -> None:
    # Issue 12: after users.sqlite3 was corrupted then restored byte for byte, lookups kept
    # failing until a restart (the pooled connection kept the corrupt pages it had read).
    home = Home(tmp_path)
    create_directory(home)
    writer = Directory.open(home)
    writer.add_domain("ex.test")
    writer.add_user("u@ex.test", "pw")
    writer.close()
    lazy = LazyDirectory(home, None)
    cache = CachedLookups(lazy)
    try:
        assert cache.hosts_domain("ex.test")
        good = home.database.read_bytes()
        _corrupt(home.database, good)
        with pytest.raises(TemporaryFailure):
            cache.resolve("u@ex.test")
        home.database.write_bytes(good)
        deadline = time.monotonic() + 10
        while not _hosted(cache, "u@ex.test"):
            assert time.monotonic() < deadline, "the directory was never read again"
            time.sleep(0.1)
    finally:
        lazy.close()
