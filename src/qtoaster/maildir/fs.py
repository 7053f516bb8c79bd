"""LocalFs: the store's file operations done in this process, confined to one Maildir.

The mailbox broker runs it for the IMAP sessions it serves, and a server not started as
root uses it directly (maildir/storeapi.py's MailFs).  Messages are written as local
delivery writes them (maildir/deliver.py: tmp/, fsync, link, fsync the directory) but
into cur/, named ``<unique>,S=<disk size>,W=<wire size>:2,<info>`` so that neither quota
scans nor RFC822.SIZE need to read them again.

Invariants:
- every path is relative to the Maildir and checked (:func:`_check`): no absolute path,
  no ``..``, no empty element; symlinks are not followed when opening messages;
- ``maildirsize`` (maildir/quota.py) is checked before a message is written (over quota:
  StoreError OVERQUOTA, nothing written) and gets ``<size> 1`` after; unlinking messages
  (``cur/``/``new/`` paths) and removing folders record the freed bytes, as POP3's QUIT
  does; a maildirsize that cannot be written is only logged (it is an estimate);
- write_atomic writes ``<rel>.<pid>.<n>.tmp`` beside ``rel``, fsyncs, renames.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from qtoaster.core.durable import fsync_dir
from qtoaster.core.pid import pid
from qtoaster.maildir import names, quota
from qtoaster.maildir.deliver import unique_name
from qtoaster.maildir.mailbox import wire_size
from qtoaster.maildir.storeapi import QuotaUsage, StoreError

log = logging.getLogger(__name__)

_counter = itertools.count(1)
_NOFOLLOW = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW


def wire_size_of(data: bytes) -> int:
    """RFC822.SIZE of a message stored as ``data`` (mailbox.wire_size's rule)."""
    size = len(data) + data.count(b"\n") - data.count(b"\r\n")
    if data.endswith(b"\r"):
        return size + 1
    if data and not data.endswith(b"\n"):
        return size + 2
    return size


def name_field(name: str, letter: str) -> int | None:
    """The number after the last ``,<letter>=`` before the info (S= disk, W= wire)."""
    base = name.partition(":")[0]
    at = base.rfind(f",{letter}=")
    if at < 0:
        return None
    digits = base[at + 3 :].partition(",")[0]
    return int(digits) if digits.isdigit() and len(digits) < 19 else None


def _check(rel: str) -> str:
    if rel.startswith("/") or "\0" in rel or any(p in ("", "..") for p in rel.split("/")):
        raise OSError(errno.EINVAL, f"path outside the Maildir: {rel!r}")
    return rel


def _is_message(rel: str) -> bool:
    parts = rel.split("/")
    return len(parts) >= 2 and parts[-2] in ("cur", "new")


class LocalFs:
    """MailFs over the Maildir ``root`` (messages named with ``hostname``)."""

    def __init__(self, root: Path, *, hostname: str, quota: quota.Quota | None) -> None:
        self.root = root
        self._base = os.fspath(root)
        self.hostname = hostname
        self.quota_limits = quota

    def _path(self, rel: str) -> str:
        return f"{self._base}/{_check(rel)}" if rel else self._base

    def listdir(self, rel: str) -> list[str]:
        return os.listdir(self._path(rel))

    def stat(self, rel: str) -> tuple[int, float]:
        info = os.stat(self._path(rel))
        return info.st_size, info.st_mtime

    def open_read(self, rel: str) -> BinaryIO:
        return os.fdopen(os.open(self._path(rel), _NOFOLLOW), "rb")

    def open_many(self, rels: Sequence[str]) -> list[BinaryIO | None]:
        found: list[BinaryIO | None] = []
        for rel in rels:
            try:
                found.append(self.open_read(rel))
            except FileNotFoundError:
                found.append(None)
        return found

    def read_file(self, rel: str, limit: int) -> bytes | None:
        try:
            with self.open_read(rel) as stream:
                return stream.read(limit)
        except FileNotFoundError:
            return None

    def write_atomic(self, rel: str, data: bytes) -> None:
        target = self._path(rel)
        tmp = f"{target}.{pid()}.{next(_counter)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def append_file(self, rel: str, data: bytes) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        fd = os.open(self._path(rel), flags, 0o600)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def rename_many(self, pairs: Sequence[tuple[str, str]]) -> list[str | None]:
        results: list[str | None] = []
        for old, new in pairs:
            try:
                os.rename(self._path(old), self._path(new))
                results.append(None)
            except OSError as exc:
                results.append(errno.errorcode.get(exc.errno or 0, "EIO"))
        return results

    def unlink_many(self, rels: Sequence[str]) -> list[str | None]:
        results: list[str | None] = []
        freed = count = 0
        for rel in rels:
            path = self._path(rel)
            try:
                size = _quota_size(path) if _is_message(rel) else None
                os.unlink(path)
                results.append(None)
            except OSError as exc:
                results.append(errno.errorcode.get(exc.errno or 0, "EIO"))
                continue
            if size is not None:
                freed += size
                count += 1
        self._record(-freed, -count)
        return results

    def mkdir(self, rel: str) -> None:
        os.mkdir(self._path(rel), 0o700)

    def remove_folder(self, rel: str) -> None:
        path = self._path(rel)
        if not rel or not os.path.basename(rel).startswith("."):
            raise OSError(errno.EINVAL, f"not a Maildir++ folder: {rel!r}")
        freed = count = 0
        for sub in ("cur", "new"):
            with contextlib.suppress(FileNotFoundError):
                for name in os.listdir(f"{path}/{sub}"):
                    with contextlib.suppress(OSError):
                        freed += _quota_size(f"{path}/{sub}/{name}")
                        count += 1
        shutil.rmtree(path)
        self._record(-freed, -count)

    def rename_folder(self, old: str, new: str) -> None:
        target = self._path(new)
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, "exists", new)
        os.rename(self._path(old), target)

    def _check_quota(self, folder: str, size: int) -> None:
        limits = self.quota_limits
        if limits is None or limits.unlimited:
            return
        if not quota.check(Path(self._path(folder)), limits, size, hostname=self.hostname):
            raise StoreError("OVERQUOTA", "Quota exceeded (mailbox for user is full)")

    def _record(self, size: int, count: int) -> None:
        if count == 0:
            return
        try:
            quota.record(self.root, size, count)
        except OSError as exc:
            log.warning("cannot update maildirsize of %s: %s", self._base, exc)

    def _cur_name(self, disk: int, wire: int, info: str) -> str:
        return f"{unique_name(self.hostname)},S={disk},W={wire}:2,{info}"

    def deliver(self, folder: str, data: bytes, info: str, mtime: float | None) -> str:
        self._check_quota(folder, len(data))
        prefix = f"{folder}/" if folder else ""
        name = self._cur_name(len(data), wire_size_of(data), info)
        tmp = self._path(f"{prefix}tmp/{name.partition(':')[0]}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            if mtime is not None:
                os.utime(tmp, (mtime, mtime))
            os.link(tmp, self._path(f"{prefix}cur/{name}"))
            fsync_dir(self._path(f"{prefix}cur"))
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        self._record(len(data), 1)
        return name

    def link_copy(self, src: str, folder: str, info: str) -> str:
        source = self._path(src)
        file_name = os.path.basename(src)
        disk = name_field(file_name, "S")
        if disk is None:
            disk = os.stat(source).st_size
        wire = name_field(file_name, "W")
        if wire is None:
            wire = wire_size(source)
        self._check_quota(folder, disk)
        prefix = f"{folder}/" if folder else ""
        name = self._cur_name(disk, wire, info)
        target = self._path(f"{prefix}cur/{name}")
        try:
            os.link(source, target)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
            tmp = self._path(f"{prefix}tmp/{name.partition(':')[0]}")
            shutil.copy2(source, tmp)
            try:
                os.link(tmp, target)
            finally:
                os.unlink(tmp)
        fsync_dir(self._path(f"{prefix}cur"))
        self._record(disk, 1)
        return name

    def lock(self, rel: str) -> int:
        return os.open(self._path(rel), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def quota(self) -> QuotaUsage:
        limits = self.quota_limits
        if limits is not None and not limits.unlimited:
            quota.check(self.root, limits, 0, hostname=self.hostname)  # builds a missing file
        found = quota.read_maildirsize(self.root)
        if limits is None and found is not None:
            limits = found[0]
        used = found[1] if found is not None else quota.Usage(0, 0)
        return QuotaUsage(
            storage_used=max(used.bytes, 0),
            storage_limit=limits.bytes if limits is not None else None,
            messages_used=max(used.messages, 0),
            messages_limit=limits.messages if limits is not None else None,
        )


def _quota_size(path: str) -> int:
    """Spec 21.2: the ``,S=`` size of a message, else its size on disk."""
    digits = names.size_digits(os.path.basename(path))
    return int(digits) if digits else os.stat(path).st_size


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
