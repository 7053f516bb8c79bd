"""MaildirView: a selected folder (storeapi.View) over its FolderState.

The view keeps ``_known``, the picture of each message it last reported; :meth:`refresh`
compares the state with it and returns the differences as Changes.  ``messages`` is the
session's list: refresh() does not edit it (the session reports EXPUNGEs by the sequence
numbers it still has), the session applies the Changes with :meth:`apply` (or itself);
STORE's own flag changes are written into it at once (they move no sequence number).

Invariant: every state change happens under the folder's lock right after reading what
others appended, so two sessions never give one file two UIDs or a UID two MODSEQs.

Quick refresh (a MailFs with ``stat_many``, the broker's): :meth:`refresh` first asks, in
one round trip, for the (size, mtime) of the state file, the keywords file, new/ and cur/.
When that equals the probe taken before the previous full refresh, every mtime in it was
already old enough then that a later change cannot hide behind the clock's granularity
(:func:`~qtoaster.maildir.folderstate.settled`: 50 ms on file systems with sub-second
timestamps), and this view has nothing of its own to report, nothing changed: no lock,
no reading, empty Changes. So a change made elsewhere is reported at the latest by the
first refresh that starts more than that bound after it.  Otherwise the full refresh
runs and that probe becomes the one to compare with. With ``open_probe`` (the broker's)
:meth:`open_messages` takes that probe in the same round trip as the opens, and the next
refresh (the one after the FETCH) uses it instead of asking again: a change made after
it is reported by the refresh after that one.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, BinaryIO

from qtoaster.maildir.folderstate import FolderState, settled
from qtoaster.maildir.keywords import info_of, with_info
from qtoaster.maildir.storeapi import (
    DELETED,
    RECENT,
    Changes,
    CopyResult,
    MessageMeta,
    StoreError,
    UidValidityChanged,
)
from qtoaster.maildir.uidstate import Entry

if TYPE_CHECKING:
    from qtoaster.maildir.store import MaildirStore

# open_probe's limit (fsproto.MAX_FDS; maildir does not import the broker): more paths
# than this go through open_many, without the probe.
_OPEN_PROBE_MAX = 250


@contextlib.contextmanager
def errors() -> Iterator[None]:
    """OSError from the file system -> StoreError SERVERBUG (a temporary failure)."""
    try:
        yield
    except StoreError:
        raise
    except OSError as exc:
        raise StoreError("SERVERBUG", f"mailbox I/O error: {exc.strerror or exc}") from exc


class MaildirView:
    def __init__(self, store: MaildirStore, folder: FolderState, name: str, readonly: bool):
        self.name = name
        self.readonly = readonly
        self._store = store
        self._folder = folder
        self._recent: set[int] = set()
        self._touched: set[int] | None = set()
        self._probe: list[tuple[int, float] | None] | None = None
        self._probe_settled = False
        self._early: tuple[float, list[tuple[int, float] | None]] | None = None
        with errors(), folder.locked():
            folder.load()
            _touched, recent = folder.scan(move_new=not readonly)
        self._recent = recent
        state = folder.state
        self.uidvalidity = state.uidvalidity
        self.uidnext = state.nextuid
        self.highestmodseq = state.highestmodseq
        self._touched = set()
        meta = self._meta
        self.messages = [meta(state.entries[uid]) for uid in sorted(state.entries)]
        self._known = {m.uid: m for m in self.messages}

    def _meta(self, entry: Entry) -> MessageMeta:
        name = entry.name
        info = name[name.find(":2,") + 3 :] if ":2," in name else ""
        flags = self._folder.keywords.flags(info, entry.extra)
        recent = entry.uid in self._recent
        return MessageMeta(entry.uid, flags, entry.modseq, entry.size, entry.mtime, recent)

    def _sync(self, force: bool = False) -> None:
        """Load others' records and scan (under the lock); remember what changed."""
        touched = self._folder.load()
        if touched is None or self._folder.state.uidvalidity != self.uidvalidity:
            if self._folder.state.uidvalidity != self.uidvalidity:
                raise UidValidityChanged()
            self._touched = None
        scanned, recent = self._folder.scan(move_new=not self.readonly, force=force)
        self._recent |= recent
        if self._touched is not None and touched is not None:
            self._touched |= touched | scanned

    def _unchanged(self) -> bool:
        """The quick refresh's probe (see the module docstring): True when nothing can
        have changed since the last full refresh."""
        early, self._early = self._early, None
        if early is not None:
            asked, probe = early
        else:
            stat_many = getattr(self._folder.fs, "stat_many", None)
            if stat_many is None:
                return False
            asked = time.time()
            probe = stat_many(self._probe_paths())
        if self._probe_settled and probe == self._probe and self._touched == set():
            return True
        self._probe = probe
        self._probe_settled = settled((None if st is None else st[1] for st in probe), asked)
        return False

    def _probe_paths(self) -> list[str]:
        folder = self._folder
        paths = [folder.state.file, folder.keywords.file, f"{folder.prefix}new"]
        paths.append(f"{folder.prefix}cur")
        return paths

    def _open(self, paths: list[str]) -> list[BinaryIO | None]:
        """open_many, carrying the next refresh's probe when the MailFs can."""
        fs = self._folder.fs
        open_probe = getattr(fs, "open_probe", None)
        if open_probe is None or len(paths) > _OPEN_PROBE_MAX:
            return fs.open_many(paths)
        asked = time.time()
        files: list[BinaryIO | None]
        files, probe = open_probe(paths, self._probe_paths())
        self._early = (asked, probe)
        return files

    def refresh(self) -> Changes:
        with errors():
            if self._unchanged():
                return Changes((), (), ())
        with errors(), self._folder.locked():
            self._sync()
        state = self._folder.state
        touched = self._touched
        candidates = set(self._known) | set(state.entries) if touched is None else touched
        self._touched = set()
        expunged, added, changed = [], [], []
        for uid in sorted(candidates):
            entry = state.entries.get(uid)
            old = self._known.get(uid)
            if entry is None:
                if old is not None:
                    expunged.append(uid)
                    del self._known[uid]
                continue
            meta = self._meta(entry)
            if old is None:
                if uid >= self.uidnext:
                    added.append(meta)
                    self._known[uid] = meta
            elif (meta.flags, meta.modseq) != (old.flags, old.modseq):
                changed.append(meta)
                self._known[uid] = meta
        self.uidnext = max(self.uidnext, state.nextuid)
        self.highestmodseq = state.highestmodseq
        return Changes(tuple(expunged), tuple(added), tuple(changed))

    def apply(self, changes: Changes) -> None:
        """Apply ``changes`` to ``messages`` (after the session reported them)."""
        gone = set(changes.expunged)
        updated = {m.uid: m for m in changes.flags}
        if gone or updated:
            self.messages = [updated.get(m.uid, m) for m in self.messages if m.uid not in gone]
        self.messages.extend(changes.added)

    def _entry(self, uid: int) -> Entry | None:
        return self._folder.state.entries.get(uid)

    def open_messages(self, uids: Sequence[int]) -> list[BinaryIO | None]:
        with errors():
            paths = [self._path(uid) for uid in uids]
            files = self._open([p or "" for p in paths])
            missing = [i for i, f in enumerate(files) if f is None and paths[i]]
            if missing:
                # renamed by another client since we looked: find them again by base name
                with self._folder.locked():
                    self._sync(force=True)
                again = self._folder.fs.open_many([self._path(uids[i]) or "" for i in missing])
                for i, stream in zip(missing, again, strict=True):
                    files[i] = stream
            return [f if paths[i] else None for i, f in enumerate(files)]

    def _path(self, uid: int) -> str | None:
        entry = self._entry(uid)
        return None if entry is None else self._folder.path(entry)

    def store(
        self, uids: Sequence[int], mode: str, flags: Iterable[str], unchangedsince: int | None
    ) -> tuple[list[MessageMeta], list[int]]:
        if self.readonly:
            raise StoreError("CANNOT", "folder is read-only")
        wanted = frozenset(flags) - {RECENT}
        folder = self._folder
        with errors(), folder.locked():
            self._sync()
            refused: list[int] = []
            plans: list[tuple[Entry, str, tuple[str, ...]]] = []
            for uid in uids:
                entry = self._entry(uid)
                if entry is None:
                    continue
                if unchangedsince is not None and entry.modseq > unchangedsince:
                    refused.append(uid)
                    continue
                now = folder.keywords.flags(info_of(entry.name), entry.extra)
                new = wanted if mode == "" else now | wanted if mode == "+" else now - wanted
                if new == now:
                    continue
                info, extra = folder.keywords.encode(info_of(entry.name), new)
                plans.append((entry, with_info(entry.name, info), extra))
            renames = [
                (folder.path(e), f"{folder.prefix}cur/{name}")
                for e, name, _ in plans
                if name != e.name or e.sub != "cur"
            ]
            results = iter(folder.fs.rename_many(renames))
            modseq = folder.state.next_modseq() if plans else 0
            changed = []
            for entry, name, extra in plans:
                if (name != entry.name or entry.sub != "cur") and next(results) is not None:
                    continue  # gone meanwhile: the next refresh reports it
                entry.sub, entry.name = "cur", name
                if extra != entry.extra:
                    folder.state.set_extra(entry, extra)
                folder.state.renamed(entry, modseq)
                meta = self._meta(entry)
                self._known[entry.uid] = meta
                changed.append(meta)
        self.highestmodseq = folder.state.highestmodseq
        if changed:
            index = {m.uid: m for m in changed}
            self.messages = [index.get(m.uid, m) for m in self.messages]
        return changed, refused

    def copy(self, uids: Sequence[int], dest: str) -> CopyResult:
        with errors():
            with self._folder.locked():
                self._sync()
                sources = [(uid, e) for uid in sorted(uids) if (e := self._entry(uid))]
                items = [
                    (uid, self._folder.path(e), self._meta(e).flags - {RECENT}, e.mtime)
                    for uid, e in sources
                ]
            return self._store.copy_into(items, dest)

    def move(self, uids: Sequence[int], dest: str) -> CopyResult:
        if self.readonly:
            raise StoreError("CANNOT", "folder is read-only")
        result = self.copy(uids, dest)
        self._remove(list(result.source_uids))
        return result

    def expunge(self, uids: Sequence[int] | None) -> None:
        if self.readonly:
            raise StoreError("CANNOT", "folder is read-only")
        with errors(), self._folder.locked():
            self._sync()
            entries = self._folder.state.entries
            chosen = entries if uids is None else [u for u in uids if u in entries]
            doomed = [
                uid
                for uid in chosen
                if DELETED in self._folder.keywords.flags(info_of(entries[uid].name))
            ]
            self._remove_locked(doomed)

    def _remove(self, uids: list[int]) -> None:
        with errors(), self._folder.locked():
            self._sync()
            self._remove_locked([u for u in uids if u in self._folder.state.entries])

    def _remove_locked(self, uids: list[int]) -> None:
        if not uids:
            return
        folder = self._folder
        entries = folder.state.entries
        results = folder.fs.unlink_many([folder.path(entries[uid]) for uid in uids])
        modseq = folder.state.next_modseq()
        for uid, error in zip(uids, results, strict=True):
            if error is None:
                folder.state.expunged(uid, modseq)
                if self._touched is not None:
                    self._touched.add(uid)

    def vanished(self, modseq: int, uids: Sequence[int] | None) -> list[int]:
        with errors(), self._folder.locked():
            self._sync()
        state = self._folder.state
        found = state.vanished(modseq)
        if found is None:  # tombstones no longer reach back: every UID not present
            pool = range(1, state.nextuid) if uids is None else uids
            return sorted(u for u in set(pool) if u not in state.entries and u < state.nextuid)
        if uids is not None:
            wanted = set(uids)
            return [u for u in found if u in wanted]
        return found

    def watch_dirs(self) -> list[str]:
        return [f"{self._folder.prefix}new", f"{self._folder.prefix}cur"]

    def close(self) -> None:
        self._folder.close()
