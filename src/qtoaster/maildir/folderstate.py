"""One folder's UID state kept in step with its files: load (or migrate, or rebuild) the
state, scan new/ and cur/, give UIDs to files the state does not know.

Message files are the truth (storeapi's invariants): a file whose base name the state
does not know gets a new UID (never one given before: ``nextuid`` only grows), a known
UID whose file is gone is expunged, a file renamed by another client (flags) gets a new
MODSEQ.  The scan is skipped for a directory whose mtime matches the one the state
recorded (``d`` record), and such an mtime is only recorded when :func:`settled` trusts it
(a change within the clock's granularity could hide otherwise).

First open without ``qtoaster-uidlist``: Dovecot's ``dovecot-uidlist`` or Courier's
``courierimapuiddb`` give UIDVALIDITY, next UID and the UIDs of the files they list
(maildir/imported.py); Courier's ``courierimapkeywords/:list`` gives keywords.  An
unreadable state is rebuilt with a new UIDVALIDITY.  Everything here runs under the
folder's lock (:meth:`FolderState.locked`).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import BinaryIO

from qtoaster.maildir.imported import (
    read_courier_keywords,
    read_courier_uidlist,
    read_dovecot_uidlist,
)
from qtoaster.maildir.keywords import Keywords, info_of, with_info
from qtoaster.maildir.names import name_field
from qtoaster.maildir.storeapi import MailFs
from qtoaster.maildir.uidstate import Entry, StateError, UidState, new_uidvalidity

log = logging.getLogger(__name__)

# When an mtime proves that nothing changed since (see settled()): FRESH seconds for file
# systems with sub-second timestamps, SETTLE for those that keep whole seconds.
FRESH = 0.05
SETTLE = 2.0
_OPEN_BATCH = 250  # new files opened per broker round trip (fsproto.MAX_FDS)
_BIG = 32 << 20  # a dovecot-uidlist of 100,000 messages is about 5 MB
_CHUNK = 1 << 16


def settled(mtimes: Iterable[float | None], asked: float) -> bool:
    """True when every mtime (None: a missing file) read by a stat made after the wall
    clock said ``asked`` is old enough that any later change must stamp a newer one.

    Linux stamps inode times from the coarse wall clock (current_time(): advanced once a
    jiffy, 1 to 10 ms for HZ 1000 to 100; multi-grain timestamps of Linux 6.13 are only
    finer), truncated to the file system's granularity, nanoseconds on ext4 (256-byte
    inodes), XFS, btrfs and tmpfs. A change after the stat is stamped at least at
    ``asked`` minus one jiffy; so an mtime older than ``asked - FRESH`` (50 ms, five
    jiffies at HZ 100) differs from every later stamp, while a younger one may be shared
    by a change in the same tick and is not trusted: the caller looks again (the next
    refresh, or scan, that is more than FRESH later trusts it). A file system with
    whole-second stamps (ext4 with 128-byte inodes, FAT, some NFS exports) shows whole
    seconds: such an mtime needs SETTLE (2 s). A nanosecond stamp that happens to be
    a whole second only costs a full look. Same host, same clock: the broker stats the
    files it serves, and a clock stepped backwards is not covered (nor was it before)."""
    for mtime in mtimes:
        if mtime is not None and mtime >= asked - (SETTLE if mtime == int(mtime) else FRESH):
            return False
    return True


def measure(stream: BinaryIO) -> int:
    """RFC822.SIZE of a stored message read from ``stream`` (closed here)."""
    size = bare = 0
    last = b""
    with stream:
        while chunk := stream.read(_CHUNK):
            bare += chunk.count(b"\n") - chunk.count(b"\r\n")
            if last == b"\r" and chunk[:1] == b"\n":
                bare -= 1
            last = chunk[-1:]
            size += len(chunk)
    if last == b"\r":
        return size + bare + 1
    if last and last != b"\n":
        return size + bare + 2
    return size + bare


class FolderState:
    def __init__(self, fs: MailFs, folder: str) -> None:
        self.fs = fs
        self.folder = folder
        self.prefix = f"{folder}/" if folder else ""
        self.state = UidState(fs, folder)
        self.keywords = Keywords(fs, folder)
        self._imported: dict[str, int] = {}
        self._imported_keywords: dict[str, tuple[str, ...]] = {}

    @contextmanager
    def locked(self) -> Iterator[None]:
        with self.state.locked():
            yield

    def close(self) -> None:
        self.state.close()

    def load(self) -> set[int] | None:
        """Read the state (under the lock): touched UIDs, or None after a full load."""
        self.keywords.load()
        try:
            return self.state.sync()
        except FileNotFoundError:
            self._migrate()
        except StateError as exc:
            log.warning(
                "maildir UID state of %r unreadable (%s): rebuilt", self.folder or "INBOX", exc
            )
            self.state.create(new_uidvalidity())
        return None

    def _migrate(self) -> None:
        imported = None
        data = self.fs.read_file(f"{self.prefix}dovecot-uidlist", _BIG)
        if data is not None:
            imported = read_dovecot_uidlist(data)
        if imported is None:
            data = self.fs.read_file(f"{self.prefix}courierimapuiddb", _BIG)
            if data is not None:
                imported = read_courier_uidlist(data)
        courier_kw = self.fs.read_file(f"{self.prefix}courierimapkeywords/:list", _BIG)
        if courier_kw is not None:
            self._imported_keywords = read_courier_keywords(courier_kw)
        if imported is None:
            self.state.create(new_uidvalidity())
            return
        self._imported = imported.uids
        self.state.create(imported.uidvalidity, imported.nextuid)

    def path(self, entry: Entry) -> str:
        return f"{self.prefix}{entry.sub}/{entry.name}"

    def scan(self, *, move_new: bool, force: bool = False) -> tuple[set[int], set[int]]:
        """Bring the state in step with new/ and cur/: (touched UIDs, UIDs this call moved
        from new/ to cur/ when ``move_new``, the view's \\Recent)."""
        touched: set[int] = set()
        state = self.state
        new_dir, cur_dir = f"{self.prefix}new", f"{self.prefix}cur"
        for _attempt in range(3):
            asked = time.time()  # before the stats: settled() needs it so
            before = (self.fs.stat(new_dir)[1], self.fs.stat(cur_dir)[1])
            known = None if force else state.dirs
            list_new = known is None or before[0] != known[0]
            list_cur = known is None or before[1] != known[1]
            if not list_new and not list_cur:
                break
            listing: dict[str, tuple[str, str]] = {}
            for sub, wanted in (("new", list_new), ("cur", list_cur)):
                if wanted:
                    for name in self.fs.listdir(f"{self.prefix}{sub}"):
                        if name[:1] != ".":
                            listing[name.partition(":")[0]] = (sub, name)
            after = (self.fs.stat(new_dir)[1], self.fs.stat(cur_dir)[1])
            self._reconcile(listing, list_new, list_cur, touched)
            if after == before:
                state.set_dirs(before if settled(before, asked) else None)
                break
            force = True
        else:
            state.set_dirs(None)
        self._imported = {}
        recent = self._move_new() if move_new else set()
        return touched, recent

    def _reconcile(
        self,
        listing: dict[str, tuple[str, str]],
        list_new: bool,
        list_cur: bool,
        touched: set[int],
    ) -> None:
        state = self.state
        modseq: int | None = None
        unknown: list[tuple[str, str, str]] = []
        by_base, entries = state.by_base, state.entries
        for base, (sub, name) in listing.items():
            uid = by_base.get(base)
            if uid is None:
                unknown.append((base, sub, name))
                continue
            entry = entries[uid]
            if entry.name != name or entry.sub != sub:
                flags_changed = info_of(entry.name) != info_of(name)
                if flags_changed and modseq is None:
                    modseq = state.next_modseq()
                entry.sub, entry.name = sub, name
                state.renamed(entry, modseq if flags_changed else None)
                touched.add(uid)
        listed = {"new": list_new, "cur": list_cur}
        gone = [
            uid
            for uid, entry in entries.items()
            if listed[entry.sub] and entry.name.partition(":")[0] not in listing
        ]
        if gone:
            modseq = modseq or state.next_modseq()
            for uid in gone:
                state.expunged(uid, modseq)
                touched.add(uid)
        if unknown:
            modseq = modseq or state.next_modseq()
            # Arrival order (maildir(5) names start with the time): UIDs follow it.
            unknown.sort(key=lambda item: arrival_key(item[0]))
            for start in range(0, len(unknown), _OPEN_BATCH):
                batch = unknown[start : start + _OPEN_BATCH]
                for (base, sub, name), found in zip(batch, self._measure(batch), strict=True):
                    if found is None:
                        continue  # renamed or removed meanwhile: the next scan sees it
                    fresh = self._new_entry(base, sub, name, modseq, *found)
                    state.add(fresh)
                    touched.add(fresh.uid)

    def _measure(self, batch: list[tuple[str, str, str]]) -> list[tuple[int, float] | None]:
        """(RFC822.SIZE, mtime) of each new file, None when gone: the files are opened
        together (one broker round trip per batch) and measured by their descriptors."""
        files = self.fs.open_many([f"{self.prefix}{sub}/{name}" for _base, sub, name in batch])
        found: list[tuple[int, float] | None] = []
        try:
            for (_base, _sub, name), stream in zip(batch, files, strict=True):
                if stream is None:
                    found.append(None)
                    continue
                mtime = os.fstat(stream.fileno()).st_mtime
                size = name_field(name, "W")
                found.append((measure(stream) if size is None else size, mtime))
        finally:
            for stream in files:
                if stream is not None:
                    stream.close()
        return found

    def _new_entry(
        self, base: str, sub: str, name: str, modseq: int, size: int, mtime: float
    ) -> Entry:
        uid = self._imported.get(base)
        state = self.state
        if uid is None or uid in state.entries or uid in state.tombstones or uid >= state.nextuid:
            uid = state.new_uid()
        entry = Entry(uid, modseq, size, int(mtime), sub, name)
        entry.extra = self._imported_keywords.pop(base, ())
        return entry

    def _move_new(self) -> set[int]:
        """new/ -> cur/ (``:2,`` appended) for the messages still in new/, as Dovecot
        does at SELECT; the ones this call moved are \\Recent for its view."""
        waiting = [entry for entry in self.state.entries.values() if entry.sub == "new"]
        if not waiting:
            return set()
        pairs = [
            (self.path(e), f"{self.prefix}cur/{with_info(e.name, info_of(e.name))}")
            for e in waiting
        ]
        moved: set[int] = set()
        for entry, (_old, new), error in zip(
            waiting, pairs, self.fs.rename_many(pairs), strict=True
        ):
            if error is None:
                entry.sub, entry.name = "cur", new.rpartition("/")[2]
                self.state.renamed(entry, None)
                moved.add(entry.uid)
        return moved


_ARRIVAL = re.compile(r"(\d+)\.(?:[^.]*?M(\d+))?")


def arrival_key(base: str) -> tuple[int, int, str]:
    """(seconds, microseconds, name) of a maildir(5) name ``<sec>.M<usec>P<pid>...``; a
    name of another form sorts by itself after those of the same second."""
    m = _ARRIVAL.match(base)
    if m is None:
        return (0, 0, base)
    return (int(m.group(1)), int(m.group(2) or 0), base)
