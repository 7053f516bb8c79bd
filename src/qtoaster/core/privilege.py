"""Who a role runs as: looking up a role's user and groups, and dropping root for good.

qmail runs each program that parses network input under its own uid (qmaild, qmailr...);
decision 0007 gives each qtoaster role one (``[users]`` in qtoaster.toml). The supervisor
alone stays root; a role started as root calls :func:`drop` before it touches a client.

Invariants:
- :func:`drop` sets the supplementary groups, then the gid, then the uid (the order that
  still has the privilege for each step), and returns only when real, effective and saved
  uid and gid are the role's and ``setuid(0)`` fails: root cannot be regained;
- started as anyone but root, nothing changes (:func:`running_as_root` is False): the demo
  and the tests run every role as the user that started them.
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Sequence
from dataclasses import dataclass

from qtoaster.core.errors import ConfigError, QtoasterError


class PrivilegeError(QtoasterError):
    """Root could not be dropped as asked, or could be regained afterwards."""


@dataclass(frozen=True, slots=True)
class Identity:
    user: str
    uid: int
    gid: int  # the user's primary group
    groups: tuple[int, ...]  # supplementary groups, the primary one included


def running_as_root() -> bool:
    return os.geteuid() == 0


def lookup(user: str, groups: Sequence[str] = ()) -> Identity:
    """The uid, primary gid and the named supplementary groups; ConfigError naming what is
    missing (``qtoaster init`` run as root creates them)."""
    problems: list[str] = []
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        problems.append(f"user {user!r} does not exist (qtoaster init as root creates it)")
        entry = None
    gids: list[int] = []
    for name in groups:
        try:
            gids.append(grp.getgrnam(name).gr_gid)
        except KeyError:
            problems.append(f"group {name!r} does not exist (qtoaster init as root creates it)")
    if problems or entry is None:
        raise ConfigError(problems)
    all_groups = tuple(dict.fromkeys([entry.pw_gid, *gids]))
    return Identity(user, entry.pw_uid, entry.pw_gid, all_groups)


def drop(identity: Identity) -> None:
    """Become ``identity`` for good (see the module's invariants)."""
    if identity.uid == 0:
        raise PrivilegeError(f"refusing to run a role as {identity.user!r}: uid 0 is root")
    os.setgroups(list(identity.groups))
    os.setresgid(identity.gid, identity.gid, identity.gid)
    os.setresuid(identity.uid, identity.uid, identity.uid)
    if os.getresuid() != (identity.uid,) * 3 or os.getresgid() != (identity.gid,) * 3:
        raise PrivilegeError(f"could not become {identity.user}: ids {os.getresuid()}")
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise PrivilegeError(f"running as {identity.user}, setuid(0) still succeeds")
