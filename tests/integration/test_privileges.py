"""Issue 13: started as root, every role runs as its own user (decision 0007).

Run as root (CI is): the uids, gids and groups of each role are read from /proc of a
started server, and each role's user is tried (setpriv) on what it must not read.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from qtoaster.config.settings import RoleUsers

from .harness import Server, dialog, make_home, qt, wait_for_mail

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: roles drop root")

USERS = RoleUsers()
# role -> (user, supplementary groups): the table of decision 0007.
EXPECTED = {
    "smtpd": (
        USERS.smtpd,
        {USERS.group, USERS.queue_group, USERS.tls_group, USERS.auth_group, USERS.mailbox_group},
    ),
    "pop3d": (USERS.pop3d, {USERS.group, USERS.tls_group, USERS.auth_group, USERS.mailbox_group}),
    "send": (USERS.send, {USERS.group, USERS.queue_group, USERS.auth_group}),
    "remote": (USERS.remote, {USERS.group, USERS.tls_group}),
    "auth": (USERS.auth, {USERS.group, USERS.auth_group}),
    "mailbox": (USERS.send, {USERS.group, USERS.auth_group}),
}


def _status(pid: int) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.split()
    return fields


def _children(pid: int) -> dict[int, str]:
    """pid -> role of the processes below ``pid`` (``serve ROLE`` in the command line)."""
    found: dict[int, str] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            found[int(child)] = argv[argv.index(b"serve") + 1].decode()
            found.update(_children(int(child)))
    return found


def _as_role(role: str, *argv: str) -> subprocess.CompletedProcess[str]:
    user, groups = EXPECTED[role]
    entry = pwd.getpwnam(user)
    gids = ",".join(str(grp.getgrnam(name).gr_gid) for name in sorted(groups))
    return subprocess.run(
        [
            "setpriv",
            f"--reuid={entry.pw_uid}",
            f"--regid={entry.pw_gid}",
            f"--groups={gids}",
            *argv,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Server]:
    home = make_home(tmp_path_factory.mktemp("priv"))
    srv = Server(home, "--pop3", "127.0.0.1:0")
    yield home, srv
    srv.stop()


def test_each_role_runs_as_its_user_and_cannot_regain_root(server: tuple[Path, Server]) -> None:
    _, srv = server
    assert _status(srv.proc.pid)["Uid"] == ["0"] * 4  # the supervisor binds and restarts
    children = _children(srv.proc.pid)
    # remote is started by send (as root, before send drops it) on first use or at start
    assert set(children.values()) == {"auth", "mailbox", "smtpd", "pop3d", "send", "remote"}
    for pid, role in children.items():
        user, groups = EXPECTED[role]
        entry = pwd.getpwnam(user)
        status = _status(pid)
        assert status["Uid"] == [str(entry.pw_uid)] * 4, role  # real, effective, saved, fs
        assert status["Gid"] == [str(entry.pw_gid)] * 4, role
        want = {entry.pw_gid} | {grp.getgrnam(name).gr_gid for name in groups}
        assert {int(g) for g in status["Groups"]} == want, role
        assert int(status["CapEff"][0], 16) == 0 and int(status["CapPrm"][0], 16) == 0, role


def test_role_users_cannot_read_what_is_not_theirs(server: tuple[Path, Server]) -> None:
    home, _ = server
    key = str(home / "control" / "servercert.pem")
    maildir = str(home / "domains" / "example.test" / "alice" / "Maildir")
    # smtpd terminates TLS and writes the queue; it may not enter a Maildir.
    assert _as_role("smtpd", "cat", key).returncode == 0
    assert _as_role("smtpd", "ls", str(home / "queue")).returncode == 0
    denied = _as_role("smtpd", "ls", maildir)
    assert denied.returncode != 0 and "Permission denied" in denied.stderr
    # send owns the Maildirs and the queue; it may not read the TLS private key.
    assert _as_role("send", "ls", maildir).returncode == 0
    denied = _as_role("send", "cat", key)
    assert denied.returncode != 0 and "Permission denied" in denied.stderr
    # Password hashes, CRAM-MD5/APOP secrets and the key that seals them: the auth role alone.
    qt(home, "domain", "add", "kept.test", "--secrets")
    qt(home, "user", "add", "erin@kept.test", "--password", "secret")
    sealing = str(home / "secrets.key")
    assert _as_role("auth", "head", "-c0", sealing).returncode == 0
    for role in ("smtpd", "pop3d", "send", "remote"):
        denied = _as_role(role, "head", "-c0", sealing)
        assert denied.returncode != 0 and "Permission denied" in denied.stderr, role
    store = str(home / "credentials" / "credentials.sqlite3")
    assert b"$argon2" in Path(store).read_bytes()
    assert b"$argon2" not in (home / "users.sqlite3").read_bytes()
    assert _as_role("auth", "head", "-c0", store).returncode == 0
    for role in ("smtpd", "pop3d", "send", "remote"):
        denied = _as_role(role, "head", "-c0", store)
        assert denied.returncode != 0 and "Permission denied" in denied.stderr, role
    # The directory itself is readable by every role (chkuser, routing), never writable.
    for role in EXPECTED:
        assert _as_role(role, "head", "-c0", str(home / "users.sqlite3")).returncode == 0, role
        denied = _as_role(role, "sh", "-c", f"echo x >> {home / 'users.sqlite3'}")
        assert denied.returncode != 0, role
    # remote delivery and auth read neither the queue nor a Maildir.
    for role in ("remote", "auth"):
        for path in (str(home / "queue" / "mess"), maildir):
            denied = _as_role(role, "ls", path)
            assert denied.returncode != 0 and "Permission denied" in denied.stderr, (role, path)


def test_mail_flows_and_program_deliveries_run_as_the_mailbox_owner(
    server: tuple[Path, Server],
) -> None:
    home, srv = server
    out = home / "domains" / "example.test" / "bob" / "uid.txt"
    dotqmail = home / "domains" / "example.test" / "bob" / ".qmail"
    dotqmail.write_text(f"|id -u > {out}\n./Maildir/\n")
    os.chown(dotqmail, pwd.getpwnam(USERS.send).pw_uid, pwd.getpwnam(USERS.send).pw_gid)
    replies = dialog(
        srv.port,
        [
            b"HELO x",
            b"MAIL FROM:<a@example.org>",
            b"RCPT TO:<bob@example.test>",
            b"DATA",
            b"Subject: uid\r\n\r\nhello\r\n.",
            b"QUIT",
        ],
    )
    assert replies[-2].startswith(b"250"), replies
    wait_for_mail(home, "bob", b"Subject: uid")
    assert out.read_text().strip() == str(pwd.getpwnam(USERS.send).pw_uid)


def test_logins_go_through_the_auth_role(server: tuple[Path, Server]) -> None:
    _, srv = server
    pop3 = srv.ports["pop3"]
    import poplib
    import ssl

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    client = poplib.POP3("127.0.0.1", pop3, timeout=20)
    try:
        client.stls(context)
        client.user("alice@example.test")
        assert client.pass_("secret").startswith(b"+OK")
        client.quit()
    finally:
        client.close()


def test_config_check_reports_wrong_owners_and_fix_owners_repairs(
    server: tuple[Path, Server],
) -> None:
    home, _ = server
    key = home / "control" / "servercert.pem"
    os.chown(key, 0, 0)
    os.chmod(key, 0o644)
    checked = qt(home, "config", "check", check=False)
    assert checked.returncode == 0  # run would give the owners back at start
    assert (
        f"warning: {key}: owner and mode root:root 0644, expected root:{USERS.tls_group} 0640"
        " (run fixes it at start; qtoaster config fix-owners now)"
    ) in checked.stderr.decode()
    fixed = qt(home, "config", "fix-owners")
    assert b"owners OK" in fixed.stdout
    assert qt(home, "config", "check").returncode == 0
    assert grp.getgrgid(key.stat().st_gid).gr_name == USERS.tls_group


def test_commands_run_as_root_leave_files_with_the_roles_owners(
    server: tuple[Path, Server],
) -> None:
    home, _ = server
    qt(home, "user", "add", "dave@example.test", "--password", "secret")
    maildir = home / "domains" / "example.test" / "dave" / "Maildir"
    for path in (maildir, maildir / "new", maildir.parent):
        assert pwd.getpwuid(path.stat().st_uid).pw_name == USERS.send, path


def test_config_check_and_run_refuse_missing_accounts(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    settings = home / "qtoaster.toml"
    settings.write_text(
        settings.read_text().replace('smtpd = "qtoaster-smtpd"', 'smtpd = "qt-no-such-user"')
    )
    checked = qt(home, "config", "check", check=False)
    assert checked.returncode == 1
    missing = "user 'qt-no-such-user' does not exist (qtoaster init as root creates it)"
    assert missing in checked.stdout.decode()
    ran = qt(home, "run", check=False)
    assert ran.returncode == 1 and missing in ran.stderr.decode()


# Sends one line to a Unix socket and prints the answer line: run as a role's user.
_ASK = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\\n")
data = b""
while not data.endswith(b"\\n"):
    piece = s.recv(65536)
    if not piece:
        break
    data += piece
print(data.decode().strip())
"""


def _ask_as(role: str, path: Path, line: str) -> dict[str, object]:
    done = _as_role(role, sys.executable, "-c", _ASK, str(path), line)
    assert done.returncode == 0, done.stderr
    answer: dict[str, object] = json.loads(done.stdout)
    return answer


def test_pop3d_cannot_read_a_maildir_and_the_broker_wants_a_ticket(
    server: tuple[Path, Server],
) -> None:
    home, _ = server
    maildir = home / "domains" / "example.test" / "alice" / "Maildir"
    for argv in (["ls", str(maildir)], ["ls", str(maildir / "new")], ["cat", str(maildir)]):
        denied = _as_role("pop3d", *argv)
        assert denied.returncode != 0 and "Permission denied" in denied.stderr, argv
    broker = home / "run" / "mailbox" / "mailbox.sock"
    forged = json.dumps({"op": "open", "ticket": os.urandom(16).hex()})
    assert _ask_as("pop3d", broker, forged)["error"] == "ticket"
    # smtpd may ask the quota only; pop3d may not ask the quota; others may not connect.
    assert _ask_as("smtpd", broker, forged)["error"] == "denied"
    quota = json.dumps({"op": "quota", "maildir": str(maildir), "bytes": 1000, "messages": None})
    assert _ask_as("pop3d", broker, quota)["error"] == "denied"
    assert _ask_as("smtpd", broker, quota)["ok"] is True
    for role in ("remote", "auth"):
        refused = _as_role(role, sys.executable, "-c", _ASK, str(broker), quota)
        assert refused.returncode != 0 and "PermissionError" in refused.stderr, role
    # Only the broker may redeem a ticket at the auth role.
    auth = home / "run" / "auth" / "auth.sock"
    redeem = json.dumps({"id": 1, "op": "redeem", "ticket": os.urandom(16).hex()})
    answer = _ask_as("pop3d", auth, redeem)
    assert answer["ok"] is False and answer["maildir"] == ""


def test_imap_sock_serves_only_imapd(server: tuple[Path, Server]) -> None:
    """The broker's imapd door (run/mailbox/imap.sock) is beside mailbox.sock, with its
    mode; a peer whose uid is not imapd's (here pop3d's: in the mailbox group, so it may
    connect) is denied before its ticket is looked at."""
    home, _ = server
    imap = home / "run" / "mailbox" / "imap.sock"
    assert imap.stat().st_mode & 0o777 == 0o660
    forged = json.dumps({"id": 1, "op": "open", "ticket": os.urandom(16).hex()})
    answer = _ask_as("pop3d", imap, forged)
    assert (answer["id"], answer["ok"], answer["error"]) == (1, False, "denied")
    refused = _as_role("remote", sys.executable, "-c", _ASK, str(imap), forged)
    assert refused.returncode != 0 and "PermissionError" in refused.stderr
