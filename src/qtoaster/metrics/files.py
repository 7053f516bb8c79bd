"""Where the roles keep their metrics when ``--metrics`` is on, and who may read them.

``run/metrics/ROLE/`` per counting role (smtpd, pop3d, imapd, send): written by that
role's user, readable by the metrics role's group (setgid, so every file takes it).  The
supervisor wipes and makes them at start (supervisor/metricsdirs.py) and passes
PROMETHEUS_MULTIPROC_DIR to the role's processes; a role calls :func:`start` once it runs
as its user.

Invariant: the files of a process that ended stay until the next server start, so its
counts stay in the sums (a restarted worker's counters go on from where the sum was).
"""

from __future__ import annotations

import os
from pathlib import Path

from qtoaster.metrics.definitions import precreate

ENV = "PROMETHEUS_MULTIPROC_DIR"
COUNTING_ROLES = ("smtpd", "pop3d", "imapd", "send")
FILE_MODE = 0o640  # the metrics role reads them through the directory's group


def metrics_root(run_dir: Path) -> Path:
    return run_dir / "metrics"


def role_dir(run_dir: Path, role: str) -> Path:
    return metrics_root(run_dir) / role


def enabled() -> bool:
    """Whether this process keeps its metrics in files (the supervisor said so)."""
    return bool(os.environ.get(ENV))


def start(role: str) -> None:
    """Create ``role``'s series now and make this process's files readable by the metrics
    role whatever the umask (prometheus_client opens one file per type and process, when
    its first value is made: the series made here are of every type the role writes)."""
    precreate(role)
    folder = os.environ.get(ENV)
    if not folder:
        return
    suffix = f"_{os.getpid()}.db"
    for entry in os.scandir(folder):
        if entry.name.endswith(suffix) and entry.is_file(follow_symlinks=False):
            os.chmod(entry.path, FILE_MODE)
