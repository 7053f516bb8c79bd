"""The counting roles' metrics directories, made by the supervisor at start, and the
environment that points a role's processes at its own (docs/metrics.md, decision 0015).

``run/metrics/`` (root, the common group, 0750) holds ``ROLE/`` per counting role: owned
by the role's user, group the metrics user's primary group, mode 2750 (setgid: every file
takes that group; the role makes its files 0640, metrics/files.py).  Not as root, all of it
is this user's.

Invariant: wiped at every start of ``qtoaster run``, so the sums start at zero with the
server (Prometheus sees a counter reset, as after any restart); during a run nothing is
removed, so a restarted worker's predecessor keeps counting in the sums.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil

from qtoaster.config.settings import RoleUsers
from qtoaster.core.home import Home
from qtoaster.metrics.files import COUNTING_ROLES, ENV, metrics_root, role_dir
from qtoaster.supervisor.accounts import role_identity


def prepare(home: Home, users: RoleUsers | None) -> None:
    """Wipe and make the directories; ``users`` as root (their owners), None otherwise."""
    root = metrics_root(home.run_dir)
    if root.is_symlink():
        root.unlink()
    elif root.exists():
        shutil.rmtree(root)
    root.mkdir(mode=0o750)
    if users is None:
        for role in COUNTING_ROLES:
            role_dir(home.run_dir, role).mkdir(mode=0o750)
        return
    os.chown(root, 0, grp.getgrnam(users.group).gr_gid)
    reader_gid = pwd.getpwnam(users.metrics).pw_gid
    for role in COUNTING_ROLES:
        folder = role_dir(home.run_dir, role)
        folder.mkdir(mode=0o750)
        os.chown(folder, role_identity(users, role).uid, reader_gid)
        os.chmod(folder, 0o2750)


def metrics_environment(home: Home, child: str) -> dict[str, str] | None:
    """The environment of the supervisor's child ``child`` (``smtpd#0``, ``send``...): with
    PROMETHEUS_MULTIPROC_DIR for a counting role, without it for the others."""
    role = child.partition("#")[0]
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if role in COUNTING_ROLES:
        env[ENV] = str(role_dir(home.run_dir, role))
    return env
