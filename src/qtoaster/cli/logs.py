"""Log set-up for the roles: one line per event, in the format of docs/logging.md.

``TIME ROLE[PID] LEVEL EVENT key=value ...``: TIME is ISO 8601 with milliseconds and
the local UTC offset (``2026-12-07T12:05:36.123+01:00``). When stderr is journald's
(``$JOURNAL_STREAM`` names stderr's device and inode, systemd.exec(5)) the time is left
out, journald stamps its own, and the line opens with the ``<N>`` syslog priority of
sd-daemon(3) so journald keeps the level. A traceback becomes a quoted
``traceback=...`` field: no CR or LF ever reaches a line.

The queue manager and smtpd log a few lines per message, so formatting is on the
hot path: the time is formatted once per second (only the milliseconds per line),
role and pid are formatted once, and the record attributes nobody prints (caller's
source line, thread and process names) are not collected.

With ``[log] file`` the supervisor owns the file (supervisor.logfile): the roles'
stderr is a pipe to it, and this module still writes each line to stderr.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import TextIO

from qtoaster.core.logfields import fields

# sd-daemon(3): "<N>" at the start of a line sets its syslog priority in journald.
_PRIORITY = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}


def stderr_is_journal(stream: TextIO = sys.stderr) -> bool:
    """``$JOURNAL_STREAM`` (``DEV:INODE``) names this stream: journald reads it."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


def _offset(tm_gmtoff: int) -> str:
    sign = "+" if tm_gmtoff >= 0 else "-"
    minutes = abs(tm_gmtoff) // 60
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


class LineFormatter(logging.Formatter):
    """``TIME ROLE[PID] LEVEL message`` (or ``<N>ROLE[PID] LEVEL message`` for journald)."""

    def __init__(self, role: str, pid: int, *, journal: bool = False) -> None:
        super().__init__()
        self._frame = f" {role}[{pid}] "
        self._journal = journal
        self._second = -1
        self._date = ""
        self._zone = ""

    def _stamp(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            local = time.localtime(second)
            self._second = second
            self._date = time.strftime("%Y-%m-%dT%H:%M:%S", local)
            self._zone = _offset(local.tm_gmtoff)
        return f"{self._date}.{int((created - second) * 1000):03d}{self._zone}"

    def format(self, record: logging.LogRecord) -> str:
        msg = record.msg if isinstance(record.msg, str) else str(record.msg)
        if record.args:
            msg = msg % record.args
        if record.exc_info:
            msg = f"{msg} {fields(traceback=self.formatException(record.exc_info))}"
        if "\n" in msg or "\r" in msg:  # a free-text argument: never a second line
            msg = msg.replace("\r", "\\r").replace("\n", "\\n")
        level = record.levelname
        if self._journal:
            return f"<{_PRIORITY.get(level, 6)}>{self._frame[1:]}{level} {msg}"
        return f"{self._stamp(record.created)}{self._frame}{level} {msg}"


def setup_logging(level: str, name: str) -> None:
    # Documented switches of the logging module (see its source): skip the stack walk
    # for the caller and the thread/process lookups on every record.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LineFormatter(name, os.getpid(), journal=stderr_is_journal()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
