"""``[log] file``: the supervisor (root) alone writes the log file; every role's stderr,
and the supervisor's own log, is one pipe that a thread here copies into it, line by line
(as daemontools' multilog reads svscan's children). So roles running as different users
never open the file, and rotation has one writer: ``logging.handlers.RotatingFileHandler``
renames ``file`` to ``file.1`` ... ``file.KEEP`` when the next line would pass
``max_bytes``. The file is created mode 0640.

Lines stay whole: a role writes each line with one ``write`` to the pipe, and writes of
up to PIPE_BUF (4096) bytes to a pipe are never interleaved (pipe(7)). A longer line
(a traceback field) may interleave with another role's line written at the same moment.
"""

from __future__ import annotations

import io
import logging
import logging.handlers
import os
import threading


class _Rotating(logging.handlers.RotatingFileHandler):
    def _open(self) -> io.TextIOWrapper:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        fd = os.open(self.baseFilename, flags, 0o640)
        os.fchmod(fd, 0o640)
        return open(fd, "a", encoding="utf-8", errors="backslashreplace")


class LogFile:
    """The pipe's write end (``write_fd``, every role's stderr) and the copying thread."""

    def __init__(self, path: str, max_bytes: int, keep: int) -> None:
        self._handler = _Rotating(path, maxBytes=max_bytes, backupCount=keep)
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        self._read_fd, self.write_fd = os.pipe()
        os.set_inheritable(self.write_fd, True)
        self._thread = threading.Thread(target=self._copy, name="logfile", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _copy(self) -> None:
        partial = b""
        while True:
            data = os.read(self._read_fd, 65536)
            if not data:
                break
            lines = (partial + data).split(b"\n")
            partial = lines.pop()
            for raw in lines:
                self.write(raw.decode("utf-8", errors="backslashreplace"))
        if partial:
            self.write(partial.decode("utf-8", errors="backslashreplace"))
        os.close(self._read_fd)
        self._handler.close()

    def write(self, line: str) -> None:
        self._handler.handle(logging.makeLogRecord({"msg": line}))

    def close(self, timeout: float = 5.0) -> None:
        """Once no role writes any more: end of the pipe, everything written, file closed."""
        os.close(self.write_fd)
        self._thread.join(timeout)
