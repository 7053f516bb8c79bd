"""Delivery of one message into a Maildir++ folder (spec 16.4, maildir(5), spec 21.1).

The qmail protocol: create ``tmp/<unique>`` exclusively, write, fsync, close, link it to
``new/<unique>,S=<size>``, fsync ``new/`` so the name is durable, unlink the tmp name.

Invariants:
- a reader never sees a partial message: ``new/`` only ever gets complete, fsynced files;
- the message is streamed in bounded chunks, never held whole in memory;
- ``,S=`` is the stored size, Return-Path and Delivered-To lines included (the toaster's
  later "size" fix, spec 21.2), so Maildir++ quota scans need no stat;
- unique names cannot collide between threads (a locked counter) or processes (the pid);
- every failure raises OSError and leaves no tmp file behind;
- the first delivery into a Maildir in this process first removes the litter from its
  ``tmp/`` (maildir/litter.py: files older than 36 hours, partials of our own dead
  deliveries), so a delivery killed mid-write leaves its partial only until the next
  delivery there after the restart.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import threading
import time
from collections.abc import Callable
from typing import BinaryIO

from qtoaster.core.durable import fsync_dir
from qtoaster.core.pid import pid
from qtoaster.maildir.litter import clean_tmp, escaped_host

CHUNK = 64 * 1024
_TRIES = 3  # qmail-local tries three names before giving up (spec 16.4)

_counter = itertools.count(1)
_counter_lock = threading.Lock()
# The Maildirs whose tmp/ this process cleaned already (bounded: forgotten when full).
_cleaned: set[str] = set()
_cleaned_lock = threading.Lock()
_CLEANED_MAX = 100_000


def unique_name(hostname: str) -> str:
    """maildir(5)'s modern form ``<sec>.M<usec>P<pid>Q<n>.<host>``.

    maildir(5) asks for ``/`` and ``:`` in the host name to be written as ``\\057`` and
    ``\\072``: ``/`` would make a path, ``:`` starts the info part of a name.
    """
    with _counter_lock:
        n = next(_counter)
    seconds, micros = divmod(time.time_ns() // 1000, 1_000_000)
    return f"{seconds}.M{micros}P{pid()}Q{n}.{escaped_host(hostname)}"


def _clean_once(base: str, hostname: str) -> None:
    with _cleaned_lock:
        if base in _cleaned:
            return
        if len(_cleaned) >= _CLEANED_MAX:
            _cleaned.clear()
        _cleaned.add(base)
    clean_tmp(base, time.time(), hostname=hostname)


def _create_tmp(maildir: str, hostname: str) -> tuple[int, str]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    for _ in range(_TRIES):
        path = f"{maildir}/tmp/{unique_name(hostname)}"
        try:
            return os.open(path, flags, 0o600), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no unused name in {maildir}/tmp after {_TRIES} tries")


def _write(fd: int, prefix: bytes, source: BinaryIO, fsync: bool) -> int:
    """Write prefix and source to ``fd`` (closing it); the number of bytes written.

    The message is copied inside the kernel (copy_file_range) when source and target
    allow it, so a large message never passes through Python; else in CHUNK pieces.
    """
    try:
        _write_all(fd, prefix)
        size = len(prefix) + _copy(fd, source)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    return size


def _copy(fd: int, source: BinaryIO) -> int:
    """Copy the rest of ``source`` to ``fd``; the number of bytes copied."""
    size = 0
    try:
        src = source.fileno()
        offset = source.tell()
        remaining = os.fstat(src).st_size - offset
    except (OSError, AttributeError, ValueError):
        src = -1
    if src >= 0:
        try:
            while remaining > 0:
                copied = os.copy_file_range(src, fd, remaining, offset)
                if copied == 0:
                    break
                offset, remaining, size = offset + copied, remaining - copied, size + copied
            return size
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                raise
            source.seek(offset)  # not supported here: finish by hand from where it stopped
    while chunk := source.read(CHUNK):
        _write_all(fd, chunk)
        size += len(chunk)
    return size


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def deliver_maildir(
    maildir: str | os.PathLike[str],
    source: BinaryIO,
    prefix: bytes,
    *,
    fsync: bool = True,
    hostname: str,
    sync_dir: Callable[[str], None] = fsync_dir,
) -> str:
    """Store ``prefix`` + the rest of ``source`` in ``maildir``; the name made in new/.

    ``sync_dir`` makes the new/ name durable; pass a ``DirSyncs.sync`` to share that
    fsync with deliveries running at the same time into the same Maildir.

    Raises OSError (no space, no permission, no such Maildir...): the caller defers.
    """
    base = os.fspath(maildir)  # plain strings: pathlib costs too much per message
    _clean_once(base, hostname)
    fd, tmp_path = _create_tmp(base, hostname)
    try:
        size = _write(fd, prefix, source, fsync)
        name = f"{os.path.basename(tmp_path)},S={size}"
        os.link(tmp_path, f"{base}/new/{name}")
        # If this fsync fails the message may survive in new/ and be delivered again on
        # retry: at-least-once, never lost (DESIGN.md section 3).
        if fsync:
            sync_dir(f"{base}/new")
    finally:
        # Like qmail-local's tryunlinktmp(): once linked, a leftover tmp name is harmless
        # (readers delete tmp files older than 36 hours, spec 16.4), so errors are ignored.
        with contextlib.suppress(OSError):
            os.unlink(tmp_path)
    return name
