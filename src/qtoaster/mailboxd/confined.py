"""The file operations the mailbox broker executes for imapd, confined to one Maildir.

One :class:`ConfinedFs` per imapd connection, made for the Maildir its ticket named. Each
method is one :class:`qtoaster.maildir.storeapi.MailFs` operation, except that files come
back as descriptors (the broker sends them with SCM_RIGHTS) and errors as OSError. Every
path goes through :func:`qtoaster.maildir.confine.resolve`: relative, no ``..``, no link
followed, so whatever a taken-over imapd asks, only files inside this Maildir are touched.
(``maildir/fs.py``'s LocalFs is the in-process twin; both resolve paths the same way.)

Invariants:
- blocking; called from the broker's bounded thread pool, never on its event loop;
- the root is opened anew for each operation (no descriptor held per idle session:
  10,000 idle IMAP sessions cost no file descriptors beyond their sockets);
- only regular files are opened for reading (a FIFO planted in the Maildir cannot block
  a thread: opened O_NONBLOCK and refused);
- every descriptor opened here is closed here, except those returned, which the caller
  sends and closes;
- a delivery (APPEND, COPY) is the qmail protocol: tmp/, fsync, link into cur/, unlink the
  tmp name; maildirsize is checked before and appended after, as local delivery does.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

from qtoaster.maildir.confine import check, open_dir, open_root, resolve
from qtoaster.maildir.deliver import unique_name
from qtoaster.maildir.quota import check as quota_check
from qtoaster.maildir.quota import read_maildirsize, record
from qtoaster.maildir.storeapi import QuotaUsage, StoreError

_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_WRITE_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20


def errno_name(exc: OSError) -> str:
    """``ENOENT`` and the like; ``EIO`` when the error carries no number."""
    return errno.errorcode.get(exc.errno or errno.EIO, "EIO")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view[:_CHUNK]) :]


class ConfinedFs:
    """MailFs's operations for one Maildir (``root``, from the redeemed ticket)."""

    def __init__(self, root: str, hostname: str) -> None:
        self.root = root
        self.hostname = hostname

    @contextlib.contextmanager
    def _at(self, rel: str) -> Iterator[tuple[int, str]]:
        """(parent directory descriptor, last name) of ``rel``, closed afterwards."""
        root = open_root(self.root)
        try:
            parent, name = resolve(root, rel)
        finally:
            os.close(root)
        try:
            yield parent, name
        finally:
            os.close(parent)

    @contextlib.contextmanager
    def _dir(self, rel: str) -> Iterator[int]:
        """A descriptor of directory ``rel`` (``""``: the Maildir itself)."""
        root = open_root(self.root)
        try:
            fd = os.dup(root) if rel == "" else open_dir(root, rel)
        finally:
            os.close(root)
        try:
            yield fd
        finally:
            os.close(fd)

    def listdir(self, rel: str) -> list[str]:
        with self._dir(rel) as fd:
            return os.listdir(fd)

    def stat(self, rel: str) -> tuple[int, float]:
        with self._at(rel) as (parent, name):
            info = os.stat(name, dir_fd=parent, follow_symlinks=False)
        return info.st_size, info.st_mtime

    def _open_regular(self, parent: int, name: str) -> int:
        fd = os.open(name, _READ, dir_fd=parent)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(errno.EINVAL, "not a regular file")
        os.set_blocking(fd, True)
        return fd

    def open_read(self, rel: str) -> int:
        with self._at(rel) as (parent, name):
            return self._open_regular(parent, name)

    def open_many(self, rels: Sequence[str]) -> list[int | None]:
        """One descriptor per path, None for a path that is gone; on any other error
        the descriptors opened so far are closed and the error raised."""
        fds: list[int | None] = []
        try:
            for rel in rels:
                try:
                    fds.append(self.open_read(rel))
                except FileNotFoundError:
                    fds.append(None)
        except BaseException:
            for fd in fds:
                if fd is not None:
                    os.close(fd)
            raise
        return fds

    def read_file(self, rel: str, limit: int) -> bytes | None:
        try:
            fd = self.open_read(rel)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb") as stream:
            data = stream.read(limit + 1)
        if len(data) > limit:
            raise OSError(errno.EFBIG, f"{rel} is larger than {limit} bytes")
        return data

    def write_atomic(self, rel: str, data: bytes) -> None:
        with self._at(rel) as (parent, name):
            temp = f".{name}.{unique_name(self.hostname)}.tmp"
            fd = os.open(temp, _WRITE_NEW, 0o600, dir_fd=parent)
            try:
                try:
                    _write_all(fd, data)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.rename(temp, name, src_dir_fd=parent, dst_dir_fd=parent)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp, dir_fd=parent)
                raise
            os.fsync(parent)

    def append_file(self, rel: str, data: bytes) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        with self._at(rel) as (parent, name):
            fd = os.open(name, flags, 0o600, dir_fd=parent)
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)

    def rename_many(self, pairs: Sequence[tuple[str, str]]) -> list[str | None]:
        results: list[str | None] = []
        for old, new in pairs:
            try:
                self.rename_folder(old, new)
                results.append(None)
            except OSError as exc:
                results.append(errno_name(exc))
        return results

    def unlink_many(self, rels: Sequence[str]) -> list[str | None]:
        results: list[str | None] = []
        for rel in rels:
            try:
                with self._at(rel) as (parent, name):
                    os.unlink(name, dir_fd=parent)
                results.append(None)
            except OSError as exc:
                results.append(errno_name(exc))
        return results

    def mkdir(self, rel: str) -> None:
        with self._at(rel) as (parent, name):
            os.mkdir(name, 0o700, dir_fd=parent)

    def remove_folder(self, rel: str) -> None:
        """The directory and everything below it; links are removed, never followed."""
        with self._at(rel) as (parent, name):
            walk = os.fwalk(name, topdown=False, follow_symlinks=False, dir_fd=parent)
            for _top, dirs, files, fd in walk:
                for entry in files:
                    os.unlink(entry, dir_fd=fd)
                for entry in dirs:
                    try:
                        os.rmdir(entry, dir_fd=fd)
                    except NotADirectoryError:  # a link to a directory: listed as a dir
                        os.unlink(entry, dir_fd=fd)
            os.rmdir(name, dir_fd=parent)

    def rename_folder(self, old: str, new: str) -> None:
        with self._at(old) as (old_parent, old_name), self._at(new) as (new_parent, new_name):
            os.rename(old_name, new_name, src_dir_fd=old_parent, dst_dir_fd=new_parent)

    def _folder(self, folder: str) -> str:
        """``folder``'s path prefix (``""`` is INBOX, the Maildir itself)."""
        if folder:
            check(folder)
            return folder + "/"
        return ""

    def _fits(self, size: int) -> None:
        found = read_maildirsize(Path(self.root))
        if found is None:
            return
        quota = found[0]
        if not quota.unlimited and not quota_check(
            Path(self.root), quota, size, hostname=self.hostname
        ):
            raise StoreError("OVERQUOTA", "mailbox is over quota")

    def deliver(self, folder: str, data: bytes, info: str, mtime: float | None) -> str:
        """``data`` into ``folder``/cur as ``<unique>,S=<size>:2,<info>``; its name."""
        prefix = self._folder(folder)
        self._fits(len(data))
        unique = unique_name(self.hostname)
        name = f"{unique},S={len(data)}:2,{info}"
        check(name)
        with self._dir(prefix + "tmp") as tmp, self._dir(prefix + "cur") as cur:
            fd = os.open(unique, _WRITE_NEW, 0o600, dir_fd=tmp)
            try:
                try:
                    _write_all(fd, data)
                    os.fsync(fd)
                    if mtime is not None:
                        os.utime(fd, (mtime, mtime))
                finally:
                    os.close(fd)
                os.link(unique, name, src_dir_fd=tmp, dst_dir_fd=cur, follow_symlinks=False)
                os.fsync(cur)
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(unique, dir_fd=tmp)
        record(Path(self.root), len(data))
        return name

    def link_copy(self, src: str, folder: str, info: str) -> str:
        """COPY of message file ``src`` into ``folder``/cur (a hard link; a copy when the
        file system refuses one); its new name."""
        prefix = self._folder(folder)
        with self._at(src) as (parent, old):
            size = os.stat(old, dir_fd=parent, follow_symlinks=False)
            if not stat.S_ISREG(size.st_mode):
                raise OSError(errno.EINVAL, "not a regular file")
            self._fits(size.st_size)
            name = f"{unique_name(self.hostname)},S={size.st_size}:2,{info}"
            check(name)
            with self._dir(prefix + "cur") as cur:
                try:
                    os.link(old, name, src_dir_fd=parent, dst_dir_fd=cur, follow_symlinks=False)
                except OSError as exc:
                    if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                        raise
                    source = self._open_regular(parent, old)
                    with os.fdopen(source, "rb") as stream:
                        data = stream.read()
                    return self.deliver(folder, data, info, size.st_mtime)
                os.fsync(cur)
        record(Path(self.root), size.st_size)
        return name

    def lock(self, rel: str) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        with self._at(rel) as (parent, name):
            return os.open(name, flags, 0o600, dir_fd=parent)

    def quota(self) -> QuotaUsage:
        """maildirsize's limits and usage; no limits and nothing counted without one."""
        found = read_maildirsize(Path(self.root))
        if found is None:
            return QuotaUsage(0, None, 0, None)
        quota, usage, _lines, _mtime = found
        return QuotaUsage(usage.bytes, quota.bytes, usage.messages, quota.messages)
