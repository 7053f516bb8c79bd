"""MaildirStore: one user's Maildir++ as an IMAP store (storeapi.Store).

Folders, subscriptions and SPECIAL-USE live in maildir/folders.py, the UID state of each
folder in maildir/uidstate.py (kept in step with the files by maildir/folderstate.py),
the selected folder in maildir/view.py.  Every file operation goes through the MailFs,
so the same code runs in the mailbox broker (LocalFs) and in imapd (BrokerFs).

Invariants: a folder's state changes only under its lock (folderstate); APPEND and COPY
write the file first, then give it its UID under the destination's lock, so a crash in
between leaves a file that the next scan numbers, never a UID without a file.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from qtoaster.maildir import folders
from qtoaster.maildir.folderstate import FolderState
from qtoaster.maildir.keywords import info_of
from qtoaster.maildir.names import name_field, wire_size_of
from qtoaster.maildir.storeapi import (
    DELETED,
    SEEN,
    CopyResult,
    FolderInfo,
    FolderStatus,
    MailFs,
    QuotaUsage,
    StoreError,
)
from qtoaster.maildir.uidstate import Entry
from qtoaster.maildir.view import MaildirView, errors


class MaildirStore:
    def __init__(self, fs: MailFs) -> None:
        self.fs = fs

    # --- folders -------------------------------------------------------------------

    def _exists(self, directory: str) -> bool:
        try:
            self.fs.stat(f"{directory}/cur" if directory else "cur")
        except FileNotFoundError:
            return False
        return True

    def _existing(self, name: str) -> str:
        directory = folders.folder_dir(name)
        with errors():
            if not self._exists(directory):
                raise StoreError("NONEXISTENT", "no such folder")
        return directory

    def prepare(self) -> None:
        with errors():
            if folders.is_prepared(self.fs):
                return
            subscribed = folders.read_subscriptions(self.fs)
            special = folders.read_special_use(self.fs)
            for name, flag in folders.SPECIAL.items():
                if not self._exists(folders.folder_dir(name)):
                    folders.make_folder(self.fs, name)
                special.setdefault(name, (flag,))
                subscribed.add(name)
            folders.write_special_use(self.fs, special)
            folders.write_subscriptions(self.fs, subscribed)
            folders.mark_prepared(self.fs)

    def folders(self) -> list[FolderInfo]:
        with errors():
            names = folders.folder_names(self.fs)
            subscribed = folders.read_subscriptions(self.fs)
            special = folders.read_special_use(self.fs)
        existing = set(names)
        every = set(existing)
        for name in existing:
            parts = name.split(folders.DELIMITER)
            every.update(folders.DELIMITER.join(parts[:i]) for i in range(1, len(parts)))
        every.update(name for name in subscribed if name not in every)
        result = []
        for name in sorted(every, key=lambda n: (n != "INBOX", n)):
            prefix = name + folders.DELIMITER
            result.append(
                FolderInfo(
                    name=name,
                    subscribed=name in subscribed,
                    has_children=any(other.startswith(prefix) for other in existing),
                    special_use=special.get(name, ()) if name in existing else (),
                    selectable=name in existing,
                )
            )
        return result

    def create(self, name: str, special_use: Sequence[str] = ()) -> None:
        name = name.rstrip(folders.DELIMITER) or name
        if folders.is_inbox(name):
            raise StoreError("ALREADYEXISTS", "INBOX exists")
        directory = folders.folder_dir(name)
        bad = [use for use in special_use if use not in folders.SPECIAL_USE_FLAGS]
        if bad:
            raise StoreError("USEATTR", f"unsupported special-use {bad[0]}")
        with errors():
            if self._exists(directory):
                raise StoreError("ALREADYEXISTS", "folder exists")
            folders.make_folder(self.fs, name)
            if special_use:
                table = folders.read_special_use(self.fs)
                table[name] = tuple(special_use)
                folders.write_special_use(self.fs, table)

    def delete(self, name: str) -> None:
        if folders.is_inbox(name):
            raise StoreError("CANNOT", "INBOX cannot be deleted")
        directory = self._existing(name)
        with errors():
            self.fs.remove_folder(directory)
            table = folders.read_special_use(self.fs)
            if table.pop(name, None) is not None:
                folders.write_special_use(self.fs, table)

    def rename(self, old: str, new: str) -> None:
        source = self._existing(old)
        target = folders.folder_dir(new)
        if folders.is_inbox(new):
            raise StoreError("ALREADYEXISTS", "INBOX exists")
        with errors():
            if self._exists(target):
                raise StoreError("ALREADYEXISTS", "folder exists")
            if folders.is_inbox(old):
                self._rename_inbox(new)
                return
            children = [
                entry
                for entry in self.fs.listdir("")
                if entry.startswith(source + folders.DELIMITER)
            ]
            self.fs.rename_folder(source, target)
            for entry in children:
                self.fs.rename_folder(entry, target + entry[len(source) :])
            table = folders.read_special_use(self.fs)
            if old in table:
                table[new] = table.pop(old)
                folders.write_special_use(self.fs, table)

    def _rename_inbox(self, new: str) -> None:
        """RFC 9051 6.3.6: INBOX's messages move to ``new``; INBOX stays, empty."""
        folders.make_folder(self.fs, new)
        target = folders.folder_dir(new)
        pairs = [
            (f"{sub}/{name}", f"{target}/cur/{name if sub == 'cur' else name + ':2,'}")
            for sub in ("cur", "new")
            for name in self.fs.listdir(sub)
            if not name.startswith(".")
        ]
        self.fs.rename_many(pairs)

    def subscribe(self, name: str, subscribed: bool) -> None:
        name = folders.normalize(name)
        folders.folder_dir(name)
        with errors():
            names = folders.read_subscriptions(self.fs)
            if subscribed and name not in names:
                names.add(name)
            elif not subscribed and name in names:
                names.discard(name)
            else:
                return
            folders.write_subscriptions(self.fs, names)

    # --- messages ------------------------------------------------------------------

    def _open(self, name: str) -> FolderState:
        return FolderState(self.fs, self._existing(name))

    def status(self, name: str) -> FolderStatus:
        folder = self._open(name)
        try:
            with errors(), folder.locked():
                folder.load()
                folder.scan(move_new=False)
            state = folder.state
            unseen = deleted = recent = size = 0
            for entry in state.entries.values():
                flags = folder.keywords.flags(info_of(entry.name))
                unseen += SEEN not in flags
                deleted += DELETED in flags
                recent += entry.sub == "new"
                size += entry.size
            return FolderStatus(
                messages=len(state.entries),
                recent=recent,
                uidnext=state.nextuid,
                uidvalidity=state.uidvalidity,
                unseen=unseen,
                deleted=deleted,
                size=size,
                highestmodseq=state.highestmodseq,
            )
        finally:
            folder.close()

    def select(self, name: str, readonly: bool) -> MaildirView:
        return MaildirView(self, self._open(name), folders.normalize(name), readonly)

    def append(
        self, name: str, data: bytes, flags: Sequence[str], date: float | None
    ) -> tuple[int, int]:
        folder = self._open(name)
        try:
            with errors(), folder.locked():
                folder.load()
                info, extra = folder.keywords.encode("", flags)
                file_name = self.fs.deliver(folder.folder, data, info, date)
                state = folder.state
                stamp = int(date) if date is not None else int(time.time())
                entry = Entry(
                    state.new_uid(), state.next_modseq(), wire_size_of(data), stamp, "cur",
                    file_name,
                )  # fmt: skip
                entry.extra = extra
                state.add(entry)
                return state.uidvalidity, entry.uid
        finally:
            folder.close()

    def copy_into(self, items: list[tuple[int, str, frozenset[str], int]], dest: str) -> CopyResult:
        """COPY's second half: (source uid, path, flags, internaldate) into ``dest``."""
        folder = self._open(dest)
        try:
            with errors(), folder.locked():
                folder.load()
                state = folder.state
                modseq = state.next_modseq() if items else 0
                sources, targets = [], []
                for uid, path, flags, mtime in items:
                    info, extra = folder.keywords.encode("", flags)
                    try:
                        file_name = self.fs.link_copy(path, folder.folder, info)
                    except FileNotFoundError:
                        continue  # expunged meanwhile
                    src_name = path.rpartition("/")[2]
                    entry = Entry(state.new_uid(), modseq, _wire(src_name, file_name), mtime,
                                  "cur", file_name)  # fmt: skip
                    entry.extra = extra
                    state.add(entry)
                    sources.append(uid)
                    targets.append(entry.uid)
                return CopyResult(state.uidvalidity, tuple(sources), tuple(targets))
        finally:
            folder.close()

    def quota(self) -> QuotaUsage:
        with errors():
            return self.fs.quota()


def _wire(source: str, target: str) -> int:
    """The copy's RFC822.SIZE from the names (link_copy writes ``,W=``)."""
    for name in (target, source):
        size = name_field(name, "W")
        if size is not None:
            return size
    return 0


if TYPE_CHECKING:
    from qtoaster.maildir.fs import LocalFs
    from qtoaster.maildir.storeapi import Store, View

    def _implements(
        fs: LocalFs, store: MaildirStore, view: MaildirView
    ) -> tuple[MailFs, Store, View]:
        """mypy checks here that the classes implement storeapi's Protocols exactly."""
        return fs, store, view
