"""Log set-up for the roles: one line per event on stderr, cheap to format.

The queue manager and smtpd log a few lines per message, so formatting is on the
hot path: the timestamp is formatted once per second, not once per line, the pid is
part of the format string, and the record attributes nobody prints (caller's source
line, thread and process names) are not collected.
"""

from __future__ import annotations

import logging
import os
import sys
import time


class SecondCachedFormatter(logging.Formatter):
    def __init__(self, fmt: str) -> None:
        super().__init__(fmt)
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return self._stamp


def setup_logging(level: str, name: str) -> None:
    # Documented switches of the logging module (see its source): skip the stack walk
    # for the caller and the thread/process lookups on every record.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    pid = os.getpid()
    handler.setFormatter(
        SecondCachedFormatter(f"%(asctime)s {name}[{pid}] %(levelname)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
