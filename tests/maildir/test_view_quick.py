"""maildir/view.py's quick refresh: over a MailFs with ``stat_many`` (the broker's), a
refresh whose probe (state file, keywords file, new/, cur/) is unchanged and settled takes
no lock and reads nothing; any change (another session's flags, a delivery, a foreign
rename or removal) still shows up, settled or not."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from qtoaster.maildir.create import make_maildir
from qtoaster.maildir.folderstate import settled
from qtoaster.maildir.fs import LocalFs
from qtoaster.maildir.store import MaildirStore
from qtoaster.maildir.storeapi import FLAGGED, SEEN
from qtoaster.maildir.view import MaildirView

MSG = b"Subject: hi\n\nbody\n"
OLD = time.time() - 3600


class ProbingFs(LocalFs):
    """LocalFs plus the broker's stat_many, counting the probes and the other calls."""

    probes = 0
    listings = 0

    def stat_many(self, rels: Sequence[str]) -> list[tuple[int, float] | None]:
        self.probes += 1
        found: list[tuple[int, float] | None] = []
        for rel in rels:
            try:
                found.append(self.stat(rel))
            except FileNotFoundError:
                found.append(None)
        return found

    def listdir(self, rel: str) -> list[str]:
        self.listings += 1
        return super().listdir(rel)


def age(root: Path) -> None:
    """Everything the probe looks at an hour old (settled)."""
    for name in ("qtoaster-uidlist", "dovecot-keywords", "new", "cur"):
        if (root / name).exists():
            os.utime(root / name, (OLD, OLD))


def settle(view: MaildirView, root: Path) -> None:
    """Age the files, then full refreshes until the probe is taken on settled files (the
    first may write the directories' mtimes into the state file, which is then fresh)."""
    for _ in range(2):
        age(root)
        view.refresh()


def setup(tmp_path: Path) -> tuple[MaildirStore, ProbingFs, Path]:
    root = tmp_path / "Maildir"
    make_maildir(root)
    fs = ProbingFs(root, hostname="test.example", quota=None)
    store = MaildirStore(fs)
    store.append("INBOX", MSG, [], None)
    store.append("INBOX", MSG, [], None)
    return store, fs, root


def test_unchanged_settled_folder_is_not_read(tmp_path: Path) -> None:
    store, fs, root = setup(tmp_path)
    view = store.select("INBOX", readonly=False)
    settle(view, root)
    listings = fs.listings
    lock = os.open(root / "qtoaster-uidlist.lock", os.O_RDWR)
    fcntl.flock(lock, fcntl.LOCK_EX)  # the quick path must not wait for the lock
    try:
        for _ in range(3):
            changes = view.refresh()
            assert (changes.expunged, changes.added, changes.flags) == ((), (), ())
    finally:
        os.close(lock)
    assert fs.listings == listings and fs.probes == 5


def test_changes_are_seen_after_quick_refreshes(tmp_path: Path) -> None:
    store, _fs, root = setup(tmp_path)
    a = store.select("INBOX", readonly=False)
    b = store.select("INBOX", readonly=False)
    settle(a, root)
    assert a.refresh().flags == ()  # quick
    b.store([1], "+", [SEEN], None)
    changes = a.refresh()
    assert [m.uid for m in changes.flags] == [1] and SEEN in changes.flags[0].flags
    store.append("INBOX", MSG, [], None)
    assert [m.uid for m in a.refresh().added] == [3]
    settle(a, root)
    assert a.refresh().flags == ()
    name = sorted(os.listdir(root / "cur"))[0]
    os.rename(root / "cur" / name, root / "cur" / (name.split(":")[0] + ":2,F"))
    assert FLAGGED in a.refresh().flags[0].flags
    settle(a, root)
    os.unlink(root / "cur" / (name.split(":")[0] + ":2,F"))
    assert len(a.refresh().expunged) == 1


def test_recent_change_is_not_trusted(tmp_path: Path) -> None:
    """Fresh mtimes (within FRESH) never allow the quick path: a change in the same
    clock tick could hide; so with nothing settled every refresh is a full one."""
    store, fs, root = setup(tmp_path)
    view = store.select("INBOX", readonly=False)
    os.utime(root / "cur")  # now
    view.refresh()
    listings = fs.listings
    view.refresh()
    assert fs.listings > listings


def test_change_in_the_same_clock_tick_is_seen_next_refresh(tmp_path: Path) -> None:
    """A change stamped in the same tick as the probe keeps the directory's mtime: the
    probe was fresh, so the next refresh is a full one and reports it."""
    store, _fs, root = setup(tmp_path)
    view = store.select("INBOX", readonly=False)
    settle(view, root)
    tick = time.time_ns()
    os.utime(root / "cur", ns=(tick, tick))
    assert view.refresh().flags == ()  # full: the probe is fresh
    name = sorted(os.listdir(root / "cur"))[0]
    os.rename(root / "cur" / name, root / "cur" / (name.split(":")[0] + ":2,F"))
    os.utime(root / "cur", ns=(tick, tick))  # the same tick: the probe is unchanged
    changes = view.refresh()
    assert [m.uid for m in changes.flags] == [1] and FLAGGED in changes.flags[0].flags


def test_settled_bounds() -> None:
    now = 1_800_000_000.0
    assert settled([now - 0.06, None], now)
    assert not settled([now - 0.04], now)
    assert not settled([now - 0.06, now - 0.01], now)
    # whole seconds: a file system with 1-second stamps, the 2 s bound applies
    assert not settled([float(int(now) - 1)], now)
    assert settled([float(int(now) - 3)], now)


class EarlyProbingFs(ProbingFs):
    """ProbingFs plus the broker's open_probe (the opens carry the probe)."""

    early = 0

    def open_probe(
        self, rels: Sequence[str], probe: Sequence[str]
    ) -> tuple[list[BinaryIO | None], list[tuple[int, float] | None]]:
        self.early += 1
        stats = ProbingFs.stat_many(self, probe)
        self.probes -= 1
        return self.open_many(rels), stats


def test_probe_carried_by_the_opens(tmp_path: Path) -> None:
    """A FETCH's opens carry the probe: the refresh after it asks nothing more; a change
    made after that probe is seen by the refresh after."""
    root = tmp_path / "Maildir"
    make_maildir(root)
    fs = EarlyProbingFs(root, hostname="test.example", quota=None)
    store = MaildirStore(fs)
    store.append("INBOX", MSG, [], None)
    view = store.select("INBOX", readonly=False)
    settle(view, root)
    probes = fs.probes
    for stream in view.open_messages([1]):
        assert stream is not None
        stream.close()
    assert fs.early == 1
    assert view.refresh().added == () and fs.probes == probes  # quick, from the opens
    store.append("INBOX", MSG, [], None)
    assert [m.uid for m in view.refresh().added] == [2] and fs.probes == probes + 1
