"""Copying a whole Maildir (``qtoaster import``): messages, folders and flags, atomically.

Invariants:
- the source is only read: files are opened read-only with O_NOFOLLOW, symlinks skipped;
- the copy appears whole or not at all: it is written under a staging name beside the
  destination, fsynced, then renamed into place (rename(2) is atomic); a crash leaves only
  the staging directory, removed by the next copy;
- ``maildirsize`` is not copied (Maildir++ recalculates it, spec 21.2), nor ``tmp/`` files
  (deliveries in progress on the old host);
- a message delivered meanwhile to the empty Maildir the copy replaces is moved into it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from qtoaster.core.durable import fsync_dir

_MESSAGE_DIRS = ("cur", "new")


def _message_files(maildir: Path) -> list[Path]:
    """Files in cur/ and new/ of the Maildir and of its Maildir++ subfolders (``.Name``)."""
    folders = [maildir]
    if maildir.is_dir():
        folders += [p for p in sorted(maildir.iterdir()) if p.name.startswith(".") and p.is_dir()]
    files: list[Path] = []
    for folder in folders:
        for sub in _MESSAGE_DIRS:
            if (folder / sub).is_dir():
                files += [
                    p
                    for p in (folder / sub).iterdir()
                    if p.is_file() and not p.name.startswith(".")
                ]
    return files


def has_messages(maildir: Path) -> bool:
    """Whether the Maildir or one of its folders holds a message."""
    return bool(_message_files(maildir))


def count_messages(maildir: Path) -> int:
    """The messages in the Maildir and its folders (a dry run's count)."""
    return len(_message_files(maildir))


def _copy_file(source: Path, target: Path) -> None:
    # O_NOFOLLOW: a symlink swapped in since the walk is not followed out of the source.
    src = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            while chunk := os.read(src, 1 << 20):
                os.write(dst, chunk)
            os.fsync(dst)
        finally:
            os.close(dst)
        stat = os.fstat(src)
        # Keep the times: some clients sort or expire by the file's mtime.
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    finally:
        os.close(src)


def _copy_tree(source: Path, staging: Path) -> int:
    messages = 0
    for dirpath, dirnames, filenames in os.walk(source):
        here = Path(dirpath)
        relative = here.relative_to(source)
        (staging / relative).mkdir(mode=0o700, parents=True, exist_ok=True)
        dirnames[:] = [d for d in dirnames if not (here / d).is_symlink()]
        if here.name == "tmp" and (here.parent / "cur").is_dir():
            continue  # deliveries in progress on the old host (Maildir's tmp/)
        for name in filenames:
            path = here / name
            if name == "maildirsize" or path.is_symlink() or not path.is_file():
                continue
            _copy_file(path, staging / relative / name)
            messages += here.name in _MESSAGE_DIRS and not name.startswith(".")
    for sub in ("cur", "new", "tmp"):
        (staging / sub).mkdir(mode=0o700, exist_ok=True)
    return messages


def copy_maildir(source: Path, destination: Path) -> int:
    """Copy the Maildir ``source`` to ``destination`` (absent, or without messages) whole;
    the number of messages copied.  See the module invariants."""
    destination.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    staging = destination.with_name(f".{destination.name}.importing")
    replaced = destination.with_name(f".{destination.name}.replaced")
    if staging.exists():
        shutil.rmtree(staging)  # left by a run that crashed while copying
    messages = _copy_tree(source, staging)
    if destination.exists():
        os.rename(destination, replaced)
    os.rename(staging, destination)
    fsync_dir(destination.parent)
    if replaced.exists():
        _rescue(replaced, destination)
        shutil.rmtree(replaced)
    return messages


def _rescue(old: Path, maildir: Path) -> None:
    """Move into ``maildir`` any message delivered to the empty Maildir it replaced."""
    for message in _message_files(old):
        relative = message.relative_to(old)
        (maildir / relative.parent).mkdir(mode=0o700, parents=True, exist_ok=True)
        os.rename(message, maildir / relative)
