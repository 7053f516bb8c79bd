"""Path confinement to one Maildir: a relative path resolved with openat, never following a
symbolic link, never leaving the root.

The mailbox broker executes imapd's file requests with this (maildir/confined.py); a
taken-over imapd may send any path, so the path is checked as text first (:func:`check`)
and then walked one component at a time from the root's descriptor with
``O_NOFOLLOW | O_DIRECTORY`` (:func:`resolve`), so a symbolic link planted anywhere in the
Maildir (by a user with shell access, or by a restored backup) is refused rather than
followed. The last component is returned as a name for the ``*at`` call that follows
(``dir_fd=``, ``follow_symlinks=False`` / ``O_NOFOLLOW``), so it is never followed either.

Invariants:
- :func:`check` accepts only ``/``-separated relative paths of non-empty components that
  are not ``.`` or ``..``, without NUL, at most :data:`MAX_PATH` bytes and
  :data:`MAX_DEPTH` components; it raises :class:`PathError` (an OSError, EACCES) otherwise;
- :func:`resolve` returns a descriptor of the parent directory that is the caller's to
  close; every descriptor it opened on the way is closed, on success and on failure;
- nothing here resolves ``..`` or follows a link: a path that escapes is an error,
  never a file outside the root.
"""

from __future__ import annotations

import errno
import os

from qtoaster.core.errors import QtoasterError

MAX_PATH = 4096
MAX_DEPTH = 16
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
PATH_FLAGS = _DIR_FLAGS


class PathError(QtoasterError, PermissionError):
    """A path that is not a plain relative path inside the Maildir."""

    def __init__(self, text: str) -> None:
        super().__init__(errno.EACCES, text)


def check(rel: str) -> list[str]:
    """The components of ``rel``; PathError when it is absolute, empty, has ``.``/``..``,
    an empty component, a NUL, or is too long or deep."""
    if not isinstance(rel, str) or not rel:
        raise PathError("empty path")
    if "\0" in rel:
        raise PathError("NUL in path")
    if len(os.fsencode(rel)) > MAX_PATH:
        raise PathError("path too long")
    if rel.startswith("/"):
        raise PathError("absolute path")
    parts = rel.split("/")
    if len(parts) > MAX_DEPTH:
        raise PathError("path too deep")
    for part in parts:
        if part in ("", ".", ".."):
            raise PathError(f"bad path component {part!r}")
    return parts


def open_root(root: str) -> int:
    """A descriptor of the Maildir itself (the ticket's path, trusted: the auth role named
    it); the caller closes it."""
    return os.open(root, _DIR_FLAGS & ~os.O_NOFOLLOW)


def resolve(root_fd: int, rel: str) -> tuple[int, str]:
    """(descriptor of the directory holding ``rel``'s last component, that name). Every
    directory on the way is opened with O_NOFOLLOW: a symbolic link is ELOOP/ENOTDIR,
    never followed. The descriptor is the caller's to close."""
    parts = check(rel)
    fd = os.dup(root_fd)
    try:
        for part in parts[:-1]:
            child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd, parts[-1]


def open_dir(root_fd: int, rel: str) -> int:
    """A descriptor of the directory ``rel`` itself (no link followed on the way or at
    the end); the caller's to close."""
    parent, name = resolve(root_fd, rel)
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    finally:
        os.close(parent)
