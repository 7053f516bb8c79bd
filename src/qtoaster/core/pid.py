"""This process's id without a system call each time.

glibc stopped caching getpid(), and queue ids and Maildir names need it per message;
the value is refreshed in the child after a fork.
"""

from __future__ import annotations

import os

_pid = os.getpid()


def _refresh() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_refresh)


def pid() -> int:
    return _pid
