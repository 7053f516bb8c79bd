"""A private Dovecot IMAP server on loopback for the integration tests: the reference the
real-client drivers (imapclients.py) are checked against, and the maker of the migration
fixtures (tests/fixtures/imap/make_dovecot_fixture.py).

``DovecotImap(workdir, users)`` writes its own dovecot.conf (``dovecot -c``: nothing of the
system configuration is read), a self-signed certificate for 127.0.0.1/localhost, a
passwd-file with ``{PLAIN}`` passwords, one ``maildir:~/Maildir`` per user owned by
uid/gid 65534, and listens on 127.0.0.1 only: ``imap`` (STARTTLS offered, LOGIN allowed in
clear too) and ``imaps``. Dovecot cannot report a port it chose, so free ports are picked
by binding port 0 and retried if the start loses the race.

Invariants: everything lives under ``workdir`` (which must be traversable by the dovecot,
dovenull and 65534 users: made 0755 here); ``stop()`` ends the master by its pid (bounded
wait, then SIGKILL) so no Dovecot outlives a test.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

DOVECOT = Path("/usr/sbin/dovecot")
IMAP_BINARY = Path("/usr/lib/dovecot/imap")
MAIL_ID = 65534
SAN = "DNS:localhost,IP:127.0.0.1,DNS:127.0.0.1"


def available() -> bool:
    return DOVECOT.exists() and IMAP_BINARY.exists() and os.geteuid() == 0


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed RSA certificate for 127.0.0.1 and localhost: (cert, key). 127.0.0.1 is
    also a DNS name in it: isync 1.4 matches the host only against DNS names."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", f"subjectAltName={SAN}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DovecotImap:
    def __init__(self, workdir: Path, users: dict[str, str]) -> None:
        self.root = workdir
        self.users = users  # login name -> password
        self.port = 0
        self.imaps_port = 0
        self.cert = workdir / "cert.pem"

    @property
    def conf_file(self) -> Path:
        return self.root / "dovecot.conf"

    @property
    def base_dir(self) -> Path:
        return self.root / "run"

    @property
    def log_file(self) -> Path:
        return self.root / "dovecot.log"

    def maildir(self, user: str) -> Path:
        return self.root / "mail" / user.partition("@")[0] / "Maildir"

    def configure(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        for sub in ("run", "state", "mail"):
            (self.root / sub).mkdir(exist_ok=True)
        self.cert, key = make_cert(self.root)
        self.key = key
        lines = []
        for user, password in self.users.items():
            home = self.maildir(user).parent
            for sub in ("new", "cur", "tmp"):
                (home / "Maildir" / sub).mkdir(parents=True, exist_ok=True)
            lines.append(f"{user}:{{PLAIN}}{password}:{MAIL_ID}:{MAIL_ID}::{home}::")
        passwd = self.root / "passwd"
        passwd.write_text("\n".join(lines) + "\n")
        passwd.chmod(0o644)
        self.fix_ownership()

    def fix_ownership(self) -> None:
        mail = self.root / "mail"
        for path in [mail, *mail.rglob("*")]:
            os.lchown(path, MAIL_ID, MAIL_ID)

    def _conf(self) -> str:
        return f"""\
# Written by tests/integration/dovecot_imap.py; regenerated on every start().
instance_name = qtoaster-test-dovecot-{self.port}
protocols = imap
listen = 127.0.0.1
base_dir = {self.base_dir}
state_dir = {self.root / "state"}
log_path = {self.log_file}
ssl = yes
ssl_cert = <{self.cert}
ssl_key = <{self.key}
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
mail_uid = {MAIL_ID}
mail_gid = {MAIL_ID}
first_valid_uid = {MAIL_ID}
last_valid_uid = {MAIL_ID}
first_valid_gid = {MAIL_ID}
last_valid_gid = {MAIL_ID}
default_internal_user = dovecot
default_login_user = dovenull
passdb {{
  driver = passwd-file
  args = {self.root / "passwd"}
}}
userdb {{
  driver = passwd-file
  args = {self.root / "passwd"}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.imaps_port}
  }}
}}
"""

    def start(self, deadline_s: float = 30.0) -> None:
        for _attempt in range(5):
            self.port, self.imaps_port = _free_port(), _free_port()
            self.conf_file.write_text(self._conf())
            # Not a pipe: the daemonized master and its children would hold it open.
            errors = self.root / "start.err"
            with errors.open("wb") as sink:
                done = subprocess.run(
                    [str(DOVECOT), "-c", str(self.conf_file)],
                    stdin=subprocess.DEVNULL, stdout=sink, stderr=sink, timeout=60,
                )  # fmt: skip
            if done.returncode == 0 and self._wait_ready(deadline_s):
                return
            self.stop()
        raise RuntimeError(f"dovecot did not start: {errors.read_text().strip()}")

    def _wait_ready(self, deadline_s: float) -> bool:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
                    if sock.recv(512).startswith(b"* OK"):
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def master_pid(self) -> int | None:
        try:
            return int((self.base_dir / "master.pid").read_text().split()[0])
        except (OSError, ValueError):
            return None

    def stop(self, deadline_s: float = 30.0) -> None:
        pid = self.master_pid()
        if pid is None:
            return
        argv = [str(DOVECOT), "-c", str(self.conf_file), "stop"]
        subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60)  # fmt: skip
        deadline = time.monotonic() + deadline_s
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, 9)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
