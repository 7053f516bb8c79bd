"""supervisor.logfile: lines from the pipe into the file, rotated by size, mode 0640."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from qtoaster.supervisor.logfile import LogFile


def test_lines_rotate_and_stay_whole(tmp_path: Path) -> None:
    path = tmp_path / "q.log"
    logfile = LogFile(str(path), max_bytes=1000, keep=2)
    logfile.start()
    lines = [f"line {i:04d} " + "x" * 80 for i in range(40)]
    for line in lines:
        os.write(logfile.write_fd, line.encode() + b"\n")
    os.write(logfile.write_fd, b"no newline at the end")
    logfile.close()
    files = [tmp_path / "q.log.2", tmp_path / "q.log.1", path]
    assert not (tmp_path / "q.log.3").exists()
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o640
        assert f.stat().st_size <= 1000
    kept = [line for f in files for line in f.read_text().splitlines()]
    assert kept[-1] == "no newline at the end"
    assert kept[:-1] == lines[-len(kept) + 1 :]  # the oldest rotated away, the rest in order
