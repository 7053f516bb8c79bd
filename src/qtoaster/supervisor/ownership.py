"""Owners and modes of a home when qtoaster runs as root (decision 0007, docs/security.md).

:func:`layout` is the one table of who owns what; :func:`apply` makes the home match it
(``init`` and ``run`` as root, and every CLI command run as root after it wrote), and
:func:`check` lists what differs (``config check``).

Invariants: nothing here runs unless the process is root; :func:`apply` never follows a
symbolic link (lchown, and modes only on what is not a link); the Maildirs under
``domains/`` are walked only below a directory that is not yet the mailbox owner's, so a
home with many users is not walked whole after every command.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

from qtoaster.config.settings import RoleUsers
from qtoaster.core.home import Home
from qtoaster.directory.credentials import credentials_file
from qtoaster.mailauth.srs import key_path

ROOT = "root"
# control/ files with a private key in them: a rule of their own, not control/'s 0640
KEY_FILES = ("servercert.pem", "clientcert.pem", "servercert.pem.old", "clientcert.pem.old")


@dataclass(frozen=True, slots=True)
class Rule:
    path: Path
    user: str
    group: str
    mode: int  # permission bits, setgid included
    contents: bool = False  # also every file directly inside (control/)


def layout(home: Home, users: RoleUsers) -> list[Rule]:
    """Who owns what in ``home`` (paths that do not exist are skipped)."""
    root, common = ROOT, users.group
    rules = [
        Rule(home.root, root, common, 0o750),
        Rule(home.settings_file, root, common, 0o640),
        Rule(home.control, root, common, 0o750, contents=True),
        Rule(home.control / "servercert.pem", root, users.tls_group, 0o640),
        Rule(home.control / "clientcert.pem", root, users.tls_group, 0o640),
        # The previous certificate (cert install, cert acme) holds a private key as well.
        Rule(home.control / "servercert.pem.old", root, users.tls_group, 0o640),
        Rule(home.control / "clientcert.pem.old", root, users.tls_group, 0o640),
        Rule(home.tcp_smtp, root, common, 0o640),
        Rule(home.root / "tcp.smtp.cdb", root, common, 0o640),
        Rule(home.database, root, common, 0o640),
        Rule(home.secrets_key, users.auth, users.auth, 0o600),
        # The SRS key: the auth role rewrites and checks SRS addresses for the others.
        Rule(key_path(home).parent, users.auth, users.auth, 0o700),
        Rule(key_path(home), users.auth, users.auth, 0o600),
        # Password hashes and secrets: the auth role alone (it also rehashes on login).
        Rule(credentials_file(home).parent, users.auth, users.auth, 0o700, contents=True),
        Rule(home.run_dir, root, common, 0o750),
        Rule(home.run_dir / "auth", users.auth, users.auth_group, 0o2750),
        # The mailbox broker's socket: pop3d and smtpd (the mailbox group) may connect.
        Rule(home.run_dir / "mailbox", users.send, users.mailbox_group, 0o2750),
        # Remote delivery's own state (the MTA-STS policy cache): its user alone writes.
        Rule(home.run_dir / "remote", users.remote, users.remote, 0o700),
        # Greylisting's and the rate limits' shared state (SQLite): smtpd alone.
        Rule(home.root / "policy", users.smtpd, users.smtpd, 0o700, contents=True),
        # The queue: smtpd (and injectors run as root) write, send reads and deletes. New
        # files take the group from the setgid directories.
        Rule(home.queue, users.send, users.queue_group, 0o2770),
        Rule(home.queue / "trigger", users.send, users.queue_group, 0o660),
        Rule(home.domains, users.send, users.send, 0o700),
        # DKIM private keys (docs/dkim.md): the send role signs; nobody else reads them.
        Rule(home.root / "dkim", users.send, users.send, 0o700),
        # The ACME account key and the record of cert acme (tls/acme.py): root's alone.
        Rule(home.root / "acme", root, root, 0o700, contents=True),
    ]
    dkim = home.root / "dkim"
    if dkim.is_dir() and not dkim.is_symlink():
        rules += [
            Rule(sub, users.send, users.send, 0o700, contents=True)
            for sub in sorted(dkim.iterdir())
            if sub.is_dir() and not sub.is_symlink()
        ]
    if home.queue.is_dir():
        rules += [
            Rule(sub, users.send, users.queue_group, 0o2770)
            for sub in sorted(home.queue.iterdir())
            if sub.is_dir() and not sub.is_symlink()
        ]
    return rules


def apply(home: Home, users: RoleUsers, *, mailboxes: bool = True) -> list[str]:
    """Make ``home`` match :func:`layout`; what was changed (root only).  ``mailboxes``
    False leaves domains/ below its top alone: a caller that knows what it created there
    gives just that to the mailbox owner (:func:`own_mail_trees`), without a walk."""
    changed: list[str] = []
    for rule in layout(home, users):
        uid, gid = _ids(rule.user, rule.group)
        changed += _fix(rule.path, uid, gid, rule.mode)
        if rule.contents and rule.path.is_dir():
            for child in sorted(rule.path.iterdir()):
                own_rule = child.name in KEY_FILES
                if child.is_file() and not child.is_symlink() and not own_rule:
                    changed += _fix(child, uid, gid, rule.mode & 0o640)
    if mailboxes:
        changed += _own_mailboxes(home, users)
    return changed


def own_mail_trees(home: Home, users: RoleUsers, tops: list[Path]) -> list[str]:
    """Give the mailbox owner the trees ``tops`` (a domain's or a user's directory under
    domains/ that a root process just made) and their parents up to domains/; a path
    outside domains/, a link or a missing one is skipped."""
    uid, gid = _ids(users.send, users.send)
    changed: list[str] = []
    base = home.domains
    for top in tops:
        if not top.is_relative_to(base) or top == base:
            continue
        try:
            st = top.lstat()
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode):
            continue
        for parent in top.relative_to(base).parents:
            above = base / parent
            if above != base and above.lstat().st_uid != uid:
                changed += _fix_owner(above, uid, gid)
        changed += _chown_tree(top, uid, gid)
    return changed


def _fix_owner(path: Path, uid: int, gid: int) -> list[str]:
    os.lchown(path, uid, gid)
    return [f"{path}: owner {uid}:{gid}"]


def make_run_dirs(home: Home) -> None:
    """The directories of the auth role's and the mailbox broker's sockets, remote
    delivery's state and smtpd's policy state (run as root, at start: :func:`apply` then
    gives them their owners)."""
    for made in (
        home.run_dir,
        home.run_dir / "auth",
        home.run_dir / "mailbox",
        home.run_dir / "remote",
        home.root / "policy",
    ):
        made.mkdir(mode=0o750, exist_ok=True)


def check(home: Home, users: RoleUsers) -> list[str]:
    """What differs from :func:`layout` (one line each, naming the path and the fix)."""
    problems: list[str] = []
    for rule in layout(home, users):
        try:
            st = rule.path.lstat()
        except FileNotFoundError:
            continue
        try:
            uid, gid = _ids(rule.user, rule.group)
        except KeyError as exc:
            problems.append(f"{rule.path}: {exc.args[0]} (qtoaster init as root creates it)")
            continue
        want = f"{rule.user}:{rule.group} {rule.mode:04o}"
        mode = stat.S_IMODE(st.st_mode)
        have = f"{_name(st.st_uid, pwd.getpwuid)}:{_name(st.st_gid, grp.getgrgid)} {mode:04o}"
        if (st.st_uid, st.st_gid, mode) != (uid, gid, rule.mode):
            problems.append(
                f"{rule.path}: owner and mode {have}, expected {want}"
                " (run fixes it at start; qtoaster config fix-owners now)"
            )
    return problems


def _own_mailboxes(home: Home, users: RoleUsers) -> list[str]:
    """Give the mailbox owner every directory under domains/ that is not yet theirs."""
    if not home.domains.is_dir():
        return []
    uid, gid = _ids(users.send, users.send)
    changed: list[str] = []
    for domain in os.scandir(home.domains):
        if not domain.is_dir(follow_symlinks=False):
            continue
        if domain.stat(follow_symlinks=False).st_uid != uid:
            changed += _chown_tree(Path(domain.path), uid, gid)
            continue
        for user in os.scandir(domain.path):
            mine = user.stat(follow_symlinks=False).st_uid == uid
            if user.is_dir(follow_symlinks=False) and not mine:
                changed += _chown_tree(Path(user.path), uid, gid)
    return changed


def _chown_tree(top: Path, uid: int, gid: int) -> list[str]:
    os.lchown(top, uid, gid)
    for dirpath, dirnames, filenames in os.walk(top):
        for name in (*dirnames, *filenames):
            os.lchown(os.path.join(dirpath, name), uid, gid)
    return [f"{top}: owner {uid}:{gid} (whole tree)"]


def _fix(path: Path, uid: int, gid: int, mode: int) -> list[str]:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return []
    changed: list[str] = []
    if (st.st_uid, st.st_gid) != (uid, gid):
        os.lchown(path, uid, gid)
        changed.append(f"{path}: owner {uid}:{gid}")
    if not stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)
        changed.append(f"{path}: mode {mode:04o}")
    return changed


def _ids(user: str, group: str) -> tuple[int, int]:
    try:
        uid = pwd.getpwnam(user).pw_uid
    except KeyError:
        raise KeyError(f"user {user!r} does not exist") from None
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        raise KeyError(f"group {group!r} does not exist") from None
    return uid, gid


def _name(number: int, getter: object) -> str:
    try:
        return getter(number)[0]  # type: ignore[operator,no-any-return]
    except KeyError:
        return str(number)


def own_queue_files(home: Home, users: RoleUsers) -> list[str]:
    """After ``restore`` wrote them as root: the files in the queue's directories go to the
    queue manager, group of the queue (it reads, appends to and deletes them; smtpd's own
    files have that group from the setgid directories). Modes are left as restored."""
    uid, gid = _ids(users.send, users.queue_group)
    changed: list[str] = []
    for rule in layout(home, users):
        if rule.path.parent != home.queue or not rule.path.is_dir():
            continue
        for child in sorted(rule.path.iterdir()):
            st = child.lstat()
            if stat.S_ISREG(st.st_mode) and (st.st_uid, st.st_gid) != (uid, gid):
                os.lchown(child, uid, gid)
                changed.append(f"{child}: owner {uid}:{gid}")
    return changed
