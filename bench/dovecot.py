"""A throwaway Dovecot POP3 server on loopback: the peer the POP3 benchmark measures against.

Installs Debian's ``dovecot-pop3d`` if it is missing (Debian's policy-rc.d may keep the
package's own instance from starting: fine, it stays unconfigured and stopped), then runs a
private instance from ``WORKDIR/dovecot`` (``dovecot -c WORKDIR/dovecot/dovecot.conf``): its
own configuration, base_dir, state_dir, passwd-file, log file and mail tree. Nothing outside
WORKDIR is configured.

Invariants:
- POP3 only, on 127.0.0.1:PORT only; ``ssl = no`` and ``disable_plaintext_auth = no``
  (Dovecot 2.3's name; 2.4 calls it ``auth_allow_cleartext``), so USER/PASS work in clear,
  the same as qtoaster with ``[auth] allow_plaintext = true``.
- One passwd-file serves as passdb and userdb: ``address:{SCHEME}hash:uid:gid::home::``;
  mail is ``maildir:~/Maildir`` under ``WORKDIR/dovecot/mail/<local part>``, owned by
  uid/gid 65534 (Dovecot refuses to access mail as root), which ``mail_uid``/``mail_gid`` name.
- Everything else is Dovecot's default, in particular ``auth_cache_size = 0`` (every login
  verifies the hash) and pop3-login's high-security mode (one login process per connection).
- ``stop()`` waits until the master process is gone (bounded), then SIGKILLs it by its pid.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

DOVECOT = Path("/usr/sbin/dovecot")
POP3_BINARY = Path("/usr/lib/dovecot/pop3")
MAIL_ID = 65534  # nobody/nogroup: Dovecot accesses the Maildirs as this uid/gid


def install() -> None:
    """apt-get install dovecot-pop3d (with dovecot-core), non-interactive."""
    if DOVECOT.exists() and POP3_BINARY.exists():
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", "dovecot-pop3d"],
        env=env,
        check=True,
    )


def version() -> str:
    return subprocess.run(
        [str(DOVECOT), "--version"], check=True, capture_output=True, text=True
    ).stdout.strip()


def _conf(server: DovecotServer) -> str:
    return f"""\
# Written by bench/dovecot.py for the qtoaster POP3 benchmark; regenerated on every configure().
instance_name = qtoaster-bench-dovecot
protocols = pop3
listen = 127.0.0.1
base_dir = {server.base_dir}
state_dir = {server.state_dir}
log_path = {server.log_file}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
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
  args = {server.passwd_file}
}}
userdb {{
  driver = passwd-file
  args = {server.passwd_file}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {server.port}
  }}
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""


@dataclass
class DovecotServer:
    """One private Dovecot instance rooted at ``workdir/dovecot``."""

    workdir: Path
    port: int = 10110
    name: str = "dovecot"

    @property
    def root(self) -> Path:
        return self.workdir / "dovecot"

    @property
    def conf_file(self) -> Path:
        return self.root / "dovecot.conf"

    @property
    def base_dir(self) -> Path:
        return self.root / "run"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def passwd_file(self) -> Path:
        return self.root / "passwd"

    @property
    def log_file(self) -> Path:
        return self.root / "dovecot.log"

    @property
    def mail_root(self) -> Path:
        return self.root / "mail"

    def maildir(self, address: str) -> Path:
        return self.mail_root / address.partition("@")[0] / "Maildir"

    def configure(self, users: dict[str, str]) -> None:
        """Fresh instance: wipe ``root``; ``users`` maps address -> ``{SCHEME}hash``.

        Creates each user's empty Maildir (new/, cur/, tmp/) owned by MAIL_ID; call
        :meth:`fix_ownership` after putting messages in them."""
        if self.root.exists():
            shutil.rmtree(self.root)
        for directory in (self.base_dir, self.state_dir, self.mail_root):
            directory.mkdir(parents=True)
        lines = []
        for address, password in users.items():
            home = self.maildir(address).parent
            for sub in ("new", "cur", "tmp"):
                (home / "Maildir" / sub).mkdir(parents=True)
            lines.append(f"{address}:{password}:{MAIL_ID}:{MAIL_ID}::{home}::")
        self.passwd_file.write_text("\n".join(lines) + "\n")
        self.passwd_file.chmod(0o644)  # the auth process runs as default_internal_user
        self.conf_file.write_text(self.conf_text())
        self.fix_ownership()

    def conf_text(self) -> str:
        """The generated dovecot.conf (POP3 here; bench/imap.py's subclass writes IMAP's)."""
        return _conf(self)

    def fix_ownership(self) -> None:
        for path in [self.mail_root, *self.mail_root.rglob("*")]:
            os.lchown(path, MAIL_ID, MAIL_ID)

    def start(self, deadline_s: float = 30.0) -> None:
        subprocess.run([str(DOVECOT), "-c", str(self.conf_file)], check=True)
        self.wait_ready(deadline_s)

    def wait_ready(self, deadline_s: float) -> None:
        wait_for_pop3(self.port, deadline_s)

    def master_pid(self) -> int:
        return int((self.base_dir / "master.pid").read_text().split()[0])

    def stop(self, deadline_s: float = 30.0) -> None:
        try:
            pid = self.master_pid()
        except (OSError, ValueError):
            return
        subprocess.run([str(DOVECOT), "-c", str(self.conf_file), "stop"], check=False)
        deadline = time.monotonic() + deadline_s
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, 9)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_for_pop3(port: int, deadline_s: float) -> None:
    """Poll until 127.0.0.1:port accepts a connection and sends a +OK greeting."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                if sock.recv(512).startswith(b"+OK"):
                    sock.sendall(b"QUIT\r\n")
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"no POP3 greeting on 127.0.0.1:{port} after {deadline_s}s")
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["install", "start", "stop"])
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/qtoaster-bench-pop3"))
    parser.add_argument("--port", type=int, default=10110)
    args = parser.parse_args(argv)
    server = DovecotServer(args.workdir, args.port)
    if args.action == "install":
        install()
    elif args.action == "start":
        # A smoke instance: one user "user@bench.test", password "x" in clear.
        install()
        server.configure({"user@bench.test": "{PLAIN}x"})
        server.start()
        print(f"{version()} ready on 127.0.0.1:{server.port}, master pid {server.master_pid()}")
    else:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
