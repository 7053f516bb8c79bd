"""ConfinedFs: the IMAP store's file operations, confined to one Maildir.

The mailbox broker makes one per imapd connection, for the Maildir its ticket named
(mailboxd/fsserver.py); ``maildir/fs.py``'s LocalFs wraps one for in-process use. Each
method is one :class:`qtoaster.maildir.storeapi.MailFs` operation, except that files come
back as descriptors (the broker sends them with SCM_RIGHTS) and errors as OSError. Every
path goes through :func:`qtoaster.maildir.confine.resolve`: relative, no ``..``, no link
followed, so whatever a taken-over imapd asks, only files inside this Maildir are touched.
Messages are written into cur/ named ``<unique>,S=<disk size>,W=<wire size>:2,<info>``,
so neither a quota scan nor RFC822.SIZE needs to read them again.

Invariants:
- blocking; called from the broker's bounded thread pool, never on its event loop;
- the root is opened anew for each operation (no descriptor held per idle session:
  10,000 idle IMAP sessions cost no file descriptors beyond their sockets);
- only regular files are opened for reading (a FIFO planted in the Maildir cannot block
  a thread: opened O_NONBLOCK and refused);
- every descriptor opened here is closed here, except those returned, which the caller
  sends and closes;
- a delivery (APPEND, COPY) is the qmail protocol: tmp/, fsync, link into cur/, unlink the
  tmp name; maildirsize is checked before (over quota: StoreError OVERQUOTA, nothing
  written) and appended after, as local delivery does; unlinking messages (``cur/`` and
  ``new/`` paths) and removing a folder record the freed bytes, as POP3's QUIT does; a
  maildirsize that cannot be written is only logged (it is an estimate).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

from qtoaster.maildir.confine import check, open_dir, open_root, resolve
from qtoaster.maildir.deliver import unique_name
from qtoaster.maildir.names import name_field, size_digits, wire_size_of
from qtoaster.maildir.quota import Quota, read_maildirsize, record
from qtoaster.maildir.quota import check as quota_check
from qtoaster.maildir.storeapi import QuotaUsage, StoreError

log = logging.getLogger(__name__)

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
    """MailFs's operations for one Maildir (``root``). ``quota`` is the limit to apply;
    None: the one maildirsize records (local delivery writes the user's there)."""

    def __init__(self, root: str, hostname: str, quota: Quota | None = None) -> None:
        self.root = root
        self.hostname = hostname
        self.limits = quota

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
        freed = count = 0
        for rel in rels:
            try:
                with self._at(rel) as (parent, name):
                    size = _quota_size(parent, name) if _is_message(rel) else None
                    os.unlink(name, dir_fd=parent)
                results.append(None)
            except OSError as exc:
                results.append(errno_name(exc))
                continue
            if size is not None:
                freed, count = freed + size, count + 1
        self._record(-freed, -count)
        return results

    def mkdir(self, rel: str) -> None:
        with self._at(rel) as (parent, name):
            os.mkdir(name, 0o700, dir_fd=parent)

    def remove_folder(self, rel: str) -> None:
        """The directory and everything below it; links are removed, never followed."""
        freed = count = 0
        with self._at(rel) as (parent, name):
            walk = os.fwalk(name, topdown=False, follow_symlinks=False, dir_fd=parent)
            for top, dirs, files, fd in walk:
                counted = top.rpartition("/")[2] in ("cur", "new") and top != name
                for entry in files:
                    if counted:
                        with contextlib.suppress(OSError):
                            freed, count = freed + _quota_size(fd, entry), count + 1
                    os.unlink(entry, dir_fd=fd)
                for entry in dirs:
                    try:
                        os.rmdir(entry, dir_fd=fd)
                    except NotADirectoryError:  # a link to a directory: listed as a dir
                        os.unlink(entry, dir_fd=fd)
            os.rmdir(name, dir_fd=parent)
        self._record(-freed, -count)

    def rename_folder(self, old: str, new: str) -> None:
        with self._at(old) as (old_parent, old_name), self._at(new) as (new_parent, new_name):
            os.rename(old_name, new_name, src_dir_fd=old_parent, dst_dir_fd=new_parent)

    def _folder(self, folder: str) -> str:
        """``folder``'s path prefix (``""`` is INBOX, the Maildir itself)."""
        if folder:
            check(folder)
            return folder + "/"
        return ""

    def _limits(self) -> Quota | None:
        if self.limits is not None:
            return self.limits
        found = read_maildirsize(Path(self.root))
        return None if found is None else found[0]

    def _fits(self, size: int) -> None:
        quota = self._limits()
        if quota is None or quota.unlimited:
            return
        if not quota_check(Path(self.root), quota, size, hostname=self.hostname):
            raise StoreError("OVERQUOTA", "Quota exceeded (mailbox for user is full)")

    def _record(self, size: int, count: int) -> None:
        if count == 0:
            return
        try:
            record(Path(self.root), size, count)
        except OSError as exc:
            log.warning("maildir cannot update maildirsize of %s: %s", self.root, exc)

    def deliver(self, folder: str, data: bytes, info: str, mtime: float | None) -> str:
        """``data`` into ``folder``/cur as ``<unique>,S=<size>:2,<info>``; its name."""
        prefix = self._folder(folder)
        self._fits(len(data))
        unique = unique_name(self.hostname)
        name = f"{unique},S={len(data)},W={wire_size_of(data)}:2,{info}"
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
        self._record(len(data), 1)
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
            wire = name_field(old, "W")
            if wire is None:
                with os.fdopen(self._open_regular(parent, old), "rb") as stream:
                    wire = wire_size_of(stream.read())
            name = f"{unique_name(self.hostname)},S={size.st_size},W={wire}:2,{info}"
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
        self._record(size.st_size, 1)
        return name

    def lock(self, rel: str) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        with self._at(rel) as (parent, name):
            return os.open(name, flags, 0o600, dir_fd=parent)

    def quota(self) -> QuotaUsage:
        """The limits and maildirsize's usage; nothing counted without limits."""
        limits = self._limits()
        if limits is not None and not limits.unlimited:
            quota_check(Path(self.root), limits, 0, hostname=self.hostname)  # builds one
        found = read_maildirsize(Path(self.root))
        if found is None:
            return QuotaUsage(0, None, 0, None)
        quota, usage, _lines, _mtime = found
        limits = limits or quota
        return QuotaUsage(
            max(usage.bytes, 0), limits.bytes, max(usage.messages, 0), limits.messages
        )


def _is_message(rel: str) -> bool:
    parts = rel.split("/")
    return len(parts) >= 2 and parts[-2] in ("cur", "new")


def _quota_size(parent: int, name: str) -> int:
    """Spec 21.2: the ``,S=`` size of a message, else its size on disk."""
    digits = size_digits(name)
    return int(digits) if digits else os.stat(name, dir_fd=parent, follow_symlinks=False).st_size
