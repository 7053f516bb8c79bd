"""The system users and groups of the roles (decision 0007): who each role runs as, and
creating the accounts ``qtoaster init`` needs when run as root.

A role's identity is its user from ``[users]`` plus the groups that give it exactly what it
reads: ``group`` (settings, control files, the directory) for all, ``queue_group`` for the
queue's writer and reader, ``tls_group`` for the private key, ``auth_group`` for the auth
role's socket, ``mailbox_group`` for the mailbox broker's socket.

Invariant: accounts are created as system accounts without a login shell or a home
directory, and an account that exists already is taken as it is (named in settings by an
operator who made it).
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import stat
import subprocess

from qtoaster.config.settings import RoleUsers
from qtoaster.core.errors import ConfigError
from qtoaster.core.privilege import Identity, drop, lookup, running_as_root

log = logging.getLogger("qtoaster.supervisor")

ROLES = ("smtpd", "pop3d", "imapd", "send", "remote", "auth", "mailbox", "metrics", "http")

# role -> (the [users] key of its user, the [users] keys of its supplementary groups)
_ROLE_ACCOUNTS: dict[str, tuple[str, tuple[str, ...]]] = {
    # smtpd asks the mailbox broker for CHKUSER_MBXQUOTA readings.
    "smtpd": ("smtpd", ("group", "queue_group", "tls_group", "auth_group", "mailbox_group")),
    # pop3d reaches a Maildir only through the mailbox broker, after a login.
    "pop3d": ("pop3d", ("group", "tls_group", "auth_group", "mailbox_group")),
    # imapd too: its store's every file operation goes through the broker (issue 15).
    "imapd": ("imapd", ("group", "tls_group", "auth_group", "mailbox_group")),
    # send asks the auth role to rewrite a forward's sender and reverse SRS (docs/srs.md).
    "send": ("send", ("group", "queue_group", "auth_group")),
    # qmail's clientcert.pem is usually servercert.pem: remote reads it for client TLS.
    "remote": ("remote", ("group", "tls_group")),
    "auth": ("auth", ("group", "auth_group")),
    # The mailbox broker: the mailbox owner, asking auth to redeem pop3d's tickets.
    "mailbox": ("send", ("group", "auth_group")),
    # The metrics role (HTTP, docs/metrics.md): enters the home, reads run/metrics/ only.
    "metrics": ("metrics", ("group",)),
    # The http role (docs/http.md): the TLS key for HTTPS, the auth role for logins; its
    # executor (root, started before the drop) does the changes (decision 0025).
    "http": ("http", ("group", "tls_group", "auth_group")),
}
NOLOGIN = "/usr/sbin/nologin"


def role_names(users: RoleUsers, role: str) -> tuple[str, tuple[str, ...]]:
    """The user name and the supplementary group names of ``role``."""
    user_key, group_keys = _ROLE_ACCOUNTS[role]
    return getattr(users, user_key), tuple(getattr(users, key) for key in group_keys)


def role_identity(users: RoleUsers, role: str) -> Identity:
    """The identity ``role`` drops to; ConfigError when an account is missing."""
    user, groups = role_names(users, role)
    return lookup(user, groups)


def ensure_accounts(users: RoleUsers) -> list[str]:
    """Create the groups and users that do not exist (root only); what was created."""
    made: list[str] = []
    group_names = dict.fromkeys(name for role in ROLES for name in role_names(users, role)[1])
    for name in group_names:
        if not _group_exists(name):
            _run(["groupadd", "--system", name])
            made.append(f"group {name}")
    for role in ROLES:
        user, _ = role_names(users, role)
        if not _user_exists(user):
            _run(
                [
                    "useradd",
                    "--system",
                    "--user-group",
                    "--no-create-home",
                    "--home-dir",
                    "/nonexistent",
                    "--shell",
                    NOLOGIN,
                    user,
                ]
            )
            made.append(f"user {user}")
    for role in ROLES:  # membership, also for accounts an operator made
        user, groups = role_names(users, role)
        primary = pwd.getpwnam(user).pw_gid
        for name in groups:
            group = grp.getgrnam(name)
            if user not in group.gr_mem and primary != group.gr_gid:
                _run(["usermod", "--append", "--groups", name, user])
    return made


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _run(argv: list[str]) -> None:
    try:
        subprocess.run(argv, check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise ConfigError([f"{argv[0]}: not found (install the passwd package)"]) from None
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or exc.stdout or "").strip()
        raise ConfigError([f"{' '.join(argv)}: failed: {detail}"]) from None
    log.info("supervisor %s", " ".join(argv))


OPTIONAL_ROLES = ("metrics", "http")
"""Roles that run only when configured: their accounts are needed only then (a home made
before the role existed starts without ``config fix-owners`` until it is turned on)."""


def check_accounts(users: RoleUsers, *, optional: tuple[str, ...] = ()) -> list[str]:
    """Problems with the accounts the roles need (empty: all there): every role's but the
    OPTIONAL_ROLES not named in ``optional``."""
    problems: list[str] = []
    for role in ROLES:
        if role in OPTIONAL_ROLES and role not in optional:
            continue
        try:
            role_identity(users, role)
        except ConfigError as exc:
            problems += [p for p in exc.problems if p not in problems]
    return problems


def become(users: RoleUsers, role: str) -> str:
    """Run the rest of this process as ``role``'s user when started as root (drop for
    good), else as it is; a phrase for the start-up log either way."""
    if not running_as_root():
        return f"running as {current_user()} (not started as root: no change of user)"
    identity = role_identity(users, role)
    drop(identity)
    return f"running as {identity.user} (uid {identity.uid}, gid {identity.gid})"


def current_user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid {os.getuid()}"


def code_unreadable() -> list[str]:
    """Where the roles' users could not load Python or qtoaster from once root is dropped
    (a venv made from a Python under /root, a checkout in a private home): one line each.
    Checked on the permission bits for others, which is what a system user without a
    shared group gets."""
    import sqlalchemy

    import qtoaster

    problems: list[str] = []
    for module_file in (os.__file__, sqlalchemy.__file__, qtoaster.__file__):
        if module_file is None:
            continue
        folder = os.path.dirname(os.path.realpath(module_file))
        if not _others_may(folder, stat.S_IROTH | stat.S_IXOTH):
            problems.append(_unreadable(folder, "read"))
            continue
        parent = os.path.dirname(folder)
        while parent != os.path.dirname(parent):
            if not _others_may(parent, stat.S_IXOTH):
                problems.append(_unreadable(parent, "enter"))
                break
            parent = os.path.dirname(parent)
    return list(dict.fromkeys(problems))


def _others_may(path: str, bits: int) -> bool:
    try:
        return os.stat(path).st_mode & bits == bits
    except OSError:
        return False


def _unreadable(path: str, what: str) -> str:
    return (
        f"{path}: other users may not {what} it, so the roles' users cannot load Python "
        "or qtoaster after dropping root; install qtoaster where they can read it "
        "(e.g. a venv of the system python3 outside /root)"
    )
