"""The trigger FIFO (``queue/trigger``): what its words mean and how the manager listens.

Words, separated by white space (docs/queue.md, "Holding and retrying"):
- ``ID``: a new message was committed;
- ``!ID`` or ``!*``: an operator asked for a retry now (qmail-send's SIGALRM);
- ``~ID``: an operator held or released a message;
- ``^``: a backup's pause request changed (queue/pause.py; the request itself is a file
  only root can write).
Anything else is ignored: anyone who can write the FIFO can only wake us.

Invariants: the FIFO is opened ``O_RDWR`` so that we hold a writer ourselves and never
see EOF in a loop; a FIFO that cannot be opened is a warning, not an error (the periodic
rescan still finds new mail).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
from collections.abc import Callable
from pathlib import Path

from qtoaster.queue.pause import WORD as PAUSE_WORD
from qtoaster.queue.store import is_qid

log = logging.getLogger("qtoaster.send")


class Word(enum.Enum):
    NEW = "new"  # a new message id
    RETRY = "retry"  # "!ID", or "!*" (the id is then "*")
    HOLD = "hold"  # "~ID": its hold mark changed
    PAUSE = "pause"  # "^": look at the pause request (the id is then "")


def parse_word(word: str) -> tuple[Word, str] | None:
    """What one word of the FIFO asks for, and about which id; None: nothing."""
    if is_qid(word):
        return Word.NEW, word
    if word == "!*" or (word[:1] == "!" and is_qid(word[1:])):
        return Word.RETRY, word[1:]
    if word[:1] == "~" and is_qid(word[1:]):
        return Word.HOLD, word[1:]
    if word == PAUSE_WORD:
        return Word.PAUSE, ""
    return None


class TriggerReader:
    """Reads the FIFO on the loop and hands every word to ``on_word``, then ``on_wake``."""

    def __init__(
        self, path: Path, on_word: Callable[[str], None], on_wake: Callable[[], None]
    ) -> None:
        self._path = path
        self._on_word = on_word
        self._on_wake = on_wake
        self._fd: int | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            fd = os.open(self._path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            log.warning("send warning: unable to open trigger %s: %s", self._path, exc)
            return
        self._fd = fd
        loop.add_reader(fd, self._readable)

    def stop(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._fd is not None:
            loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None

    def _readable(self) -> None:
        assert self._fd is not None
        with contextlib.suppress(BlockingIOError):
            while data := os.read(self._fd, 65536):
                for word in data.decode("ascii", "replace").split():
                    self._on_word(word)
        self._on_wake()
