"""Litter in a Maildir's ``tmp/``: what a dead writer left there, and removing it.

Two kinds of file are litter (maildir(5), qmail-local, spec 16.4):
- any regular file neither read nor written for 36 hours (:data:`TMP_MAX_AGE`): no live
  writer is that slow, so every Maildir reader removes them (qmail's maildir_clean());
- a partial file of our own local delivery killed mid-write (kill -9, power loss): its
  name is :func:`~qtoaster.maildir.deliver.unique_name`'s ``<sec>.M<usec>P<pid>Q<n>.<host>``
  with this host's name, and process ``pid`` no longer exists.

Invariant: a file another process may still be writing is never removed: a fresh file
is removed only when its name says this host wrote it, its pid is not ours and no
process has that pid now (a pid reused by a live process keeps the file: it goes at
36 hours).  Errors are ignored: cleaning is a courtesy, never a reason to fail.
"""

from __future__ import annotations

import os
import re
import stat

from qtoaster.core.pid import pid

TMP_MAX_AGE = 36 * 3600  # maildir(5); qmail's maildir_clean() uses 129600 seconds
_OURS = re.compile(r"\d+\.M\d+P(\d+)Q\d+\.(.+)")


def escaped_host(hostname: str) -> str:
    """The host part of a Maildir name (maildir(5): ``/`` and ``:`` escaped)."""
    return hostname.replace("/", "\\057").replace(":", "\\072")


def clean_tmp(base: str, now: float, *, hostname: str | None = None) -> int:
    """Remove the litter from ``base/tmp``; the number of files removed.

    Without ``hostname`` only the 36-hour rule applies (what any reader does); with it,
    also the partials of dead delivery processes of this host.
    """
    host = None if hostname is None else escaped_host(hostname)
    removed = 0
    try:
        with os.scandir(f"{base}/tmp") as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    info = entry.stat(follow_symlinks=False)
                    if not stat.S_ISREG(info.st_mode):
                        continue
                    old = now > max(info.st_atime, info.st_mtime) + TMP_MAX_AGE
                    if old or (host is not None and _dead_partial(entry.name, host)):
                        os.unlink(entry.path)
                        removed += 1
                except OSError:
                    continue
    except OSError:
        pass
    return removed


def _dead_partial(name: str, host: str) -> bool:
    match = _OURS.fullmatch(name)
    if match is None or match.group(2) != host:
        return False
    writer = int(match.group(1))
    if writer == pid() or writer <= 0:
        return False
    try:
        os.kill(writer, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # EPERM: alive, someone else's
    return False
