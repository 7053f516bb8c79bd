"""The UID/MODSEQ state of one folder: the file ``qtoaster-uidlist`` beside its cur/.

The file is a snapshot followed by an append-only log, one text line per record (UTF-8,
fields separated by one space, the file name always last):

``Q1 <uidvalidity> <generation> <nextuid> <highestmodseq> <floor>``
    header (first line only); ``floor``: expunges at or below it are no longer listed
``+ <uid> <modseq> <size> <mtime> <sub> <name>``
    a message: RFC822.SIZE (CRLF form), INTERNALDATE (seconds), ``new``/``cur``, file name
``= <uid> <modseq> <sub> <name>``  the file was renamed (flags changed, moved to cur/)
``k <uid> <keyword>...``            keywords beyond the 26 letters of ``dovecot-keywords``
``- <uid> <modseq>``                expunged (a tombstone for QRESYNC's VANISHED)
``d <new mtime> <cur mtime>``       the directories' mtimes the records above describe

Invariants:
- records are only appended, whole lines, under the folder's flock (``qtoaster-uidlist.lock``,
  :meth:`UidState.locked`); every writer first reads what others appended (:meth:`sync`),
  so UIDs and MODSEQs only grow and a UID is never given twice;
- a line without its newline (a writer killed mid-append) is ignored and dropped at the
  next write; anything else unreadable makes the whole file unreadable (:class:`StateError`)
  and the caller rebuilds the state with a new UIDVALIDITY;
- compaction (:meth:`compact`) rewrites the snapshot with write_atomic and a new
  generation; readers seeing another generation reload the whole file.  Only the last
  :data:`TOMBSTONES` expunges are kept; ``floor`` rises to the highest dropped one.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from qtoaster.core.errors import FormatError
from qtoaster.maildir.storeapi import MailFs

STATE_FILE = "qtoaster-uidlist"
LOCK_FILE = "qtoaster-uidlist.lock"
TOMBSTONES = 10_000
COMPACT_MIN = 2_000  # log records before a compaction is considered
_MAGIC = "Q1"
_MAX = 2**63 - 1


class StateError(FormatError, ValueError):
    """The state file cannot be read: rebuild it."""


class Entry:
    """One message as the state knows it (a plain slotted class: 100,000 of them load at
    SELECT, a dataclass costs more)."""

    __slots__ = ("extra", "modseq", "mtime", "name", "size", "sub", "uid")

    def __init__(self, uid: int, modseq: int, size: int, mtime: int, sub: str, name: str) -> None:
        self.uid = uid
        self.modseq = modseq
        self.size = size
        self.mtime = mtime
        self.sub = sub
        self.name = name
        self.extra: tuple[str, ...] = ()

    @property
    def base(self) -> str:
        return self.name.partition(":")[0]

    @property
    def path(self) -> str:
        return f"{self.sub}/{self.name}"


def _int(text: str) -> int:
    if not text.isdigit() or len(text) > 19:
        raise StateError(f"not a number: {text[:20]!r}")
    return int(text)


def _sub(text: str) -> str:
    if text not in ("new", "cur"):
        raise StateError(f"not new or cur: {text[:20]!r}")
    return text


def _name(text: str) -> str:
    if not text or "/" in text or "\0" in text:
        raise StateError("bad file name")
    return text


class UidState:
    """The state of one folder (``folder``: its directory relative to the Maildir)."""

    def __init__(self, fs: MailFs, folder: str) -> None:
        self.fs = fs
        self.folder = folder
        self.file = f"{folder}/{STATE_FILE}" if folder else STATE_FILE
        self.uidvalidity = 0
        self.generation = 0
        self.nextuid = 1
        self.highestmodseq = 1
        self.floor = 0
        self.entries: dict[int, Entry] = {}
        self.by_base: dict[str, int] = {}
        self.tombstones: dict[int, int] = {}  # uid -> modseq, oldest first
        self.dirs: tuple[float, float] | None = None
        self.loaded = False
        self._offset = 0  # bytes of whole lines consumed
        self._seen: tuple[int, float] | None = None
        self._torn = False
        self._records = 0  # log records since the snapshot
        self._pending: list[str] = []
        self._lock_fd = -1
        self._depth = 0

    # --- locking -------------------------------------------------------------------

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder's flock (re-entrant in this object); pending records are
        appended before it is released."""
        if self._depth == 0:
            if self._lock_fd < 0:
                rel = f"{self.folder}/{LOCK_FILE}" if self.folder else LOCK_FILE
                self._lock_fd = self.fs.lock(rel)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        self._depth += 1
        try:
            yield
            if self._depth == 1:
                self.commit()
        finally:
            self._depth -= 1
            if self._depth == 0:
                self._pending.clear()
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    # --- reading ---------------------------------------------------------------------

    def sync(self) -> set[int] | None:
        """Read what others appended; the UIDs touched, or None after a full (re)load.
        Raises FileNotFoundError when there is no state file, StateError when unreadable."""
        info = self.fs.stat(self.file)
        if self.loaded and info == self._seen:
            return set()
        with self.fs.open_read(self.file) as stream:
            header = stream.readline().decode("utf-8", "surrogateescape")
            fields = header.split()
            if len(fields) != 6 or fields[0] != _MAGIC or not header.endswith("\n"):
                raise StateError("no header")
            generation = _int(fields[2])
            if (
                self.loaded
                and generation == self.generation
                and _int(fields[1]) == (self.uidvalidity)
            ):
                stream.seek(self._offset)
                touched = self._apply(stream.read(), self._offset)
                self._seen = info
                return touched
            self._reset(fields)
            self._apply(stream.read(), len(header.encode("utf-8", "surrogateescape")))
        self._records = 0
        self._seen = info
        self.loaded = True
        return None

    def _reset(self, fields: list[str]) -> None:
        self.uidvalidity = _int(fields[1])
        self.generation = _int(fields[2])
        self.nextuid = _int(fields[3])
        self.highestmodseq = _int(fields[4])
        self.floor = _int(fields[5])
        if not 0 < self.uidvalidity < 2**32 or not 0 < self.nextuid < 2**32:
            raise StateError("bad header")
        self.entries = {}
        self.by_base = {}
        self.tombstones = {}
        self.dirs = None

    def _apply(self, data: bytes, start: int) -> set[int]:
        end = data.rfind(b"\n") + 1
        self._torn = end < len(data)
        self._offset = start + end
        touched: set[int] = set()
        text = data[:end].decode("utf-8", "surrogateescape")
        entries, by_base = self.entries, self.by_base
        nextuid, highest = self.nextuid, self.highestmodseq
        lines = text.split("\n")
        lines.pop()
        for line in lines:
            kind = line[:2]
            if kind == "+ ":
                # the hot loop of SELECT: int() and one range check instead of _int()
                f = line.split(" ", 6)
                try:
                    uid, modseq, size, mtime = int(f[1]), int(f[2]), int(f[3]), int(f[4])
                    sub, name = f[5], f[6]
                except (ValueError, IndexError) as exc:
                    raise StateError("bad + record") from exc
                if min(uid, modseq, size, mtime) < 0 or max(uid, modseq) > _MAX:
                    raise StateError("+ record out of range")
                if (sub != "cur" and sub != "new") or not name or "/" in name or "\0" in name:
                    raise StateError("bad + record")
                entry = Entry(uid, modseq, size, mtime, sub, name)
                old = entries.get(uid)
                if old is not None:
                    by_base.pop(old.base, None)
                entries[uid] = entry
                by_base[entry.name.partition(":")[0]] = uid
            elif kind == "= ":
                f = line.split(" ", 4)
                if len(f) != 5:
                    raise StateError("short = record")
                uid, modseq = _int(f[1]), _int(f[2])
                known = entries.get(uid)
                if known is not None:
                    known.modseq = max(known.modseq, modseq)
                    known.sub, known.name = _sub(f[3]), _name(f[4])
            elif kind == "- ":
                f = line.split(" ")
                if len(f) != 3:
                    raise StateError("short - record")
                uid, modseq = _int(f[1]), _int(f[2])
                gone = entries.pop(uid, None)
                if gone is not None and by_base.get(gone.base) == uid:
                    del by_base[gone.base]
                self.tombstones[uid] = modseq
            elif kind == "k ":
                f = line.split(" ")
                uid = _int(f[1])
                modseq = 0
                known = entries.get(uid)
                if known is not None:
                    known.extra = tuple(word for word in f[2:] if word)
            elif kind == "d ":
                f = line.split(" ")
                if len(f) != 3:
                    raise StateError("short d record")
                try:
                    self.dirs = (float(f[1]), float(f[2]))
                except ValueError as exc:
                    raise StateError("bad d record") from exc
                continue
            else:
                raise StateError(f"unknown record {line[:20]!r}")
            touched.add(uid)
            if uid >= nextuid:
                nextuid = uid + 1
            if modseq > highest:
                highest = modseq
        if nextuid >= 2**32 or highest > _MAX:
            raise StateError("UID or MODSEQ out of range")
        self.nextuid, self.highestmodseq = nextuid, highest
        self._records += len(lines)
        return touched

    # --- writing ---------------------------------------------------------------------

    def new_uid(self) -> int:
        uid = self.nextuid
        self.nextuid += 1
        return uid

    def next_modseq(self) -> int:
        self.highestmodseq += 1
        return self.highestmodseq

    def add(self, entry: Entry) -> None:
        self.entries[entry.uid] = entry
        self.by_base[entry.base] = entry.uid
        self.nextuid = max(self.nextuid, entry.uid + 1)
        self.highestmodseq = max(self.highestmodseq, entry.modseq)
        self._pending.append(
            f"+ {entry.uid} {entry.modseq} {entry.size} {entry.mtime} {entry.sub} {entry.name}"
        )
        if entry.extra:
            self._pending.append(" ".join(("k", str(entry.uid), *entry.extra)))

    def renamed(self, entry: Entry, modseq: int | None) -> None:
        """Record ``entry``'s new sub/name (set by the caller); ``modseq`` if flags changed."""
        if modseq is not None:
            entry.modseq = modseq
        self._pending.append(f"= {entry.uid} {entry.modseq} {entry.sub} {entry.name}")

    def set_extra(self, entry: Entry, extra: tuple[str, ...]) -> None:
        entry.extra = extra
        self._pending.append(" ".join(("k", str(entry.uid), *extra)))

    def expunged(self, uid: int, modseq: int) -> None:
        entry = self.entries.pop(uid, None)
        if entry is not None and self.by_base.get(entry.base) == uid:
            del self.by_base[entry.base]
        self.tombstones[uid] = modseq
        self._pending.append(f"- {uid} {modseq}")

    def set_dirs(self, dirs: tuple[float, float] | None) -> None:
        if dirs != self.dirs:
            self.dirs = dirs
            new, cur = dirs if dirs is not None else (0.0, 0.0)
            self._pending.append(f"d {new!r} {cur!r}")

    def commit(self) -> None:
        """Append the pending records (under the lock); compact when the log is long or
        its tail is torn."""
        if not self._pending and not self._torn:
            return
        if self._torn or self._records + len(self._pending) > max(
            COMPACT_MIN, len(self.entries) // 2
        ):
            self._pending.clear()
            self.compact()
            return
        data = ("\n".join(self._pending) + "\n").encode("utf-8", "surrogateescape")
        self._pending.clear()
        self.fs.append_file(self.file, data)
        self._offset += len(data)
        self._records += data.count(b"\n")
        self._seen = self.fs.stat(self.file)

    def create(self, uidvalidity: int, nextuid: int = 1) -> None:
        """A fresh state (no messages yet): written at once."""
        self._reset([_MAGIC, str(uidvalidity), "1", str(max(nextuid, 1)), "1", "0"])
        self.loaded = True
        self.compact(bump=False)

    def compact(self, bump: bool = True) -> None:
        """Rewrite the whole file (new generation): snapshot, last TOMBSTONES expunges."""
        if bump:
            self.generation += 1
        if len(self.tombstones) > TOMBSTONES:
            items = list(self.tombstones.items())
            drop, keep = items[:-TOMBSTONES], items[-TOMBSTONES:]
            self.floor = max(self.floor, max(modseq for _uid, modseq in drop))
            self.tombstones = dict(keep)
        header = (
            f"{_MAGIC} {self.uidvalidity} {self.generation} {self.nextuid} "
            f"{self.highestmodseq} {self.floor}\n"
        )
        parts = [header]
        parts += [
            f"+ {e.uid} {e.modseq} {e.size} {e.mtime} {e.sub} {e.name}\n"
            for e in self.entries.values()
        ]
        parts += [
            " ".join(("k", str(e.uid), *e.extra)) + "\n" for e in self.entries.values() if e.extra
        ]
        parts += [f"- {uid} {modseq}\n" for uid, modseq in self.tombstones.items()]
        if self.dirs is not None:
            parts.append(f"d {self.dirs[0]!r} {self.dirs[1]!r}\n")
        data = "".join(parts).encode("utf-8", "surrogateescape")
        self.fs.write_atomic(self.file, data)
        self._offset = len(data)
        self._records = 0
        self._torn = False
        self._seen = self.fs.stat(self.file)

    def vanished(self, modseq: int) -> list[int] | None:
        """UIDs expunged after ``modseq``; None when the tombstones no longer reach back
        that far (the caller then reports every UID it cannot find)."""
        if modseq < self.floor:
            return None
        return sorted(uid for uid, at in self.tombstones.items() if at > modseq)


_last_uidvalidity = 0


def new_uidvalidity() -> int:
    """The clock in seconds, strictly increasing within this process (a folder deleted
    and created again in one second still gets a new UIDVALIDITY)."""
    global _last_uidvalidity
    value = max(int(time.time()), _last_uidvalidity + 1) % 2**32 or 1
    _last_uidvalidity = value
    return value
