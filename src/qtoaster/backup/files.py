"""Walking a home and copying files with their SHA-256 (the disk side of manifest.py).

Invariants: symbolic links, sockets and FIFOs are never followed nor copied (they are
reported); a copy is hashed as it is written, from the bytes read, so the manifest says
what the snapshot holds; a Maildir message renamed while the walk runs (a flag changed,
new/ to cur/) is found again under its new name (Maildir names keep their unique part).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from qtoaster.backup.manifest import included, message_key

CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Found:
    rel: str  # relative to the home, "/"-separated
    kind: str  # "file", "dir" or "other" (link, socket, FIFO: not copied)
    mode: int
    size: int
    mtime_ns: int


def walk(root: Path) -> Iterator[Found]:
    """Every path below ``root`` a backup takes (manifest.included), parents first."""
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        keep = []
        for name in sorted(dirnames):
            rel = (base / name).relative_to(root).as_posix()
            if not included(rel):
                continue
            found = _stat(root, rel)
            if found is not None:
                yield found
                if found.kind == "dir":
                    keep.append(name)
        dirnames[:] = keep
        for name in sorted(filenames):
            rel = (base / name).relative_to(root).as_posix()
            if included(rel):
                found = _stat(root, rel)
                if found is not None:
                    yield found


def _stat(root: Path, rel: str) -> Found | None:
    try:
        st = os.lstat(root / rel)
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(st.st_mode):
        kind = "dir"
    elif stat.S_ISREG(st.st_mode):
        kind = "file"
    else:
        kind = "other"
    return Found(rel, kind, stat.S_IMODE(st.st_mode), st.st_size, st.st_mtime_ns)


def relocate(root: Path, rel: str) -> str | None:
    """Where a Maildir message that vanished from ``rel`` is now (None: deleted)."""
    key = message_key(rel)
    if key is None:
        return None
    folder, unique = key
    for sub in ("cur", "new"):
        try:
            names = os.listdir(root / folder / sub)
        except FileNotFoundError:
            continue
        for name in names:
            if name.split(":", 1)[0] == unique:
                return f"{folder}/{sub}/{name}"
    return None


def copy_hashed(src: Path, dst: Path, mode: int) -> tuple[str, int]:
    """Copy ``src`` to ``dst`` (created with ``mode``); (SHA-256, bytes) of what was written.
    The copy gets the source's mtime, which the next incremental run compares."""
    digest = hashlib.sha256()
    size = 0
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        with open(dst, "xb", opener=lambda p, f: os.open(p, f, mode)) as out:
            while chunk := os.read(fd, CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
    finally:
        os.close(fd)
    os.chmod(dst, mode)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
    return digest.hexdigest(), size


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sqlite_copy(src: Path, dst: Path, mode: int) -> tuple[str, int]:
    """A consistent copy of a live SQLite database (its online backup API: pages copied
    under SQLite's own locking, whatever writers do meanwhile); (SHA-256, size)."""
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
    try:
        target = sqlite3.connect(dst)
        try:
            source.backup(target)
        finally:
            target.close()
    finally:
        source.close()
    os.chmod(dst, mode)
    return sha256_of(dst), dst.stat().st_size
