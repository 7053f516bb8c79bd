"""LocalFs: the store's file operations done in this process, confined to one Maildir.

A server not started as root could open the Maildirs itself, and the tests and the
SELECT benchmark run the store over files directly: this is :class:`ConfinedFs` (the
operations the mailbox broker executes for imapd, maildir/confined.py) with files handed
back as file objects instead of descriptors, so that both paths share one implementation
of every operation and of its confinement.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from qtoaster.maildir.confined import ConfinedFs
from qtoaster.maildir.quota import Quota
from qtoaster.maildir.storeapi import QuotaUsage


class LocalFs:
    """MailFs over the Maildir ``root`` (messages named with ``hostname``; ``quota`` the
    limit to apply, None: the one maildirsize records)."""

    __slots__ = ("_fs", "root")

    def __init__(self, root: Path, *, hostname: str, quota: Quota | None) -> None:
        self.root = root
        self._fs = ConfinedFs(os.fspath(root), hostname, quota)

    def listdir(self, rel: str) -> list[str]:
        return self._fs.listdir(rel)

    def stat(self, rel: str) -> tuple[int, float]:
        return self._fs.stat(rel)

    def open_read(self, rel: str) -> BinaryIO:
        return os.fdopen(self._fs.open_read(rel), "rb")

    def open_many(self, rels: Sequence[str]) -> list[BinaryIO | None]:
        return [None if fd is None else os.fdopen(fd, "rb") for fd in self._fs.open_many(rels)]

    def read_file(self, rel: str, limit: int) -> bytes | None:
        return self._fs.read_file(rel, limit)

    def write_atomic(self, rel: str, data: bytes) -> None:
        self._fs.write_atomic(rel, data)

    def append_file(self, rel: str, data: bytes) -> None:
        self._fs.append_file(rel, data)

    def rename_many(self, pairs: Sequence[tuple[str, str]]) -> list[str | None]:
        return self._fs.rename_many(pairs)

    def unlink_many(self, rels: Sequence[str]) -> list[str | None]:
        return self._fs.unlink_many(rels)

    def mkdir(self, rel: str) -> None:
        self._fs.mkdir(rel)

    def remove_folder(self, rel: str) -> None:
        self._fs.remove_folder(rel)

    def rename_folder(self, old: str, new: str) -> None:
        self._fs.rename_folder(old, new)

    def deliver(self, folder: str, data: bytes, info: str, mtime: float | None) -> str:
        return self._fs.deliver(folder, data, info, mtime)

    def link_copy(self, src: str, folder: str, info: str) -> str:
        return self._fs.link_copy(src, folder, info)

    def lock(self, rel: str) -> int:
        return self._fs.lock(rel)

    def quota(self) -> QuotaUsage:
        return self._fs.quota()
