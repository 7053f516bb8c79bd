"""A throwaway Postfix instance on loopback, the peer the benchmark measures qtoaster against.

Installs the Debian ``postfix`` package if it is missing (debconf "No configuration", so the
package's own instance in /etc/postfix stays unconfigured and stopped), then runs a private
instance from ``WORKDIR/postfix`` (``postfix -c DIR``): its own main.cf, master.cf, queue,
data directory, log file and Maildir base. Nothing outside WORKDIR is configured.

Invariants:
- smtpd listens on 127.0.0.1:PORT only (a master.cf entry; ``inet_interfaces = loopback-only``).
- One virtual mailbox domain ``bench.test`` with one mailbox ``user@bench.test``, delivered
  by virtual(8) into ``WORKDIR/postfix/vmail/bench.test/user/Maildir/`` (trailing ``/`` in
  the map = Maildir).
- Postfix defaults are kept for everything that affects speed (fsync of queue files,
  in_flow_delay, destination concurrency), except the process limits the loads need.
- ``stop()`` waits until the master process is gone (bounded by a deadline).
- TLS only when ``tls_files`` (certificate, key) is given: then smtpd offers STARTTLS
  (``smtpd_tls_security_level = may``) and master.cf gains Debian's tlsmgr entry; without
  it main.cf and master.cf are exactly what ``bench/run`` always measured.
- A relayhost only when ``relayhost`` is given (e.g. ``[127.0.0.1]:PORT``, brackets = no MX
  lookup): mail for other domains then goes there (bench/relay.py); without it, unchanged.
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

POSTFIX = Path("/usr/sbin/postfix")
POSTCONF = Path("/usr/sbin/postconf")
SMTP_SOURCE = Path("/usr/sbin/smtp-source")
DOMAIN = "bench.test"
MAILBOX = "user"
# virtual(8) delivers as this uid/gid (nobody/nogroup): any unprivileged id >= virtual_minimum_uid.
VMAIL_ID = 65534


def install() -> None:
    """apt-get install postfix, non-interactive, with the "No configuration" debconf answer."""
    if POSTFIX.exists() and SMTP_SOURCE.exists():
        return
    subprocess.run(
        ["debconf-set-selections"],
        input=b"postfix postfix/main_mailer_type select No configuration\n",
        check=True,
    )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", "postfix"], env=env, check=True
    )


def _main_cf(server: PostfixServer) -> str:
    return f"""\
# Written by bench/postfix.py for the qtoaster benchmark; regenerated on every start.
compatibility_level = 3.6
config_directory = {server.config_dir}
queue_directory = {server.queue_dir}
data_directory = {server.data_dir}
maillog_file_prefixes = {server.root}
maillog_file = {server.log_file}
myhostname = mx.{DOMAIN}
mydomain = {DOMAIN}
myorigin = $myhostname
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_banner = $myhostname ESMTP
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = permit_mynetworks, reject
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_peername_lookup = no
smtp_host_lookup = native
smtp_dns_support_level = disabled
default_process_limit = 150
alias_maps =
alias_database =
local_recipient_maps =
append_dot_mydomain = no
biff = no
virtual_mailbox_domains = {DOMAIN}
virtual_mailbox_base = {server.mail_base}
virtual_mailbox_maps = texthash:{server.config_dir}/vmailbox
virtual_uid_maps = static:{VMAIL_ID}
virtual_gid_maps = static:{VMAIL_ID}
""" + _optional_cf(server)


def _optional_cf(server: PostfixServer) -> str:
    """The lines only some benchmarks ask for: empty for bench/run's own Postfix."""
    return _tls_cf(server) + _relay_cf(server)


def _relay_cf(server: PostfixServer) -> str:
    # Only the relayhost: connection cache, concurrency and fsync stay Postfix's defaults.
    return "" if server.relayhost is None else f"relayhost = {server.relayhost}\n"


def _tls_cf(server: PostfixServer) -> str:
    if server.tls_files is None:
        return ""
    cert, key = server.tls_files
    # Postfix wants the key and the certificate in two files (or one chain file); the
    # rest are Postfix 3.7's defaults (TLS 1.3 default suites, no client certificates).
    return f"""\
smtpd_tls_security_level = may
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
"""


def _master_cf(server: PostfixServer) -> str:
    # Same services as Debian's master.cf.dist, without chroot (the instance's paths are
    # outside any chroot), with only our loopback smtpd listening.
    services = [
        f"127.0.0.1:{server.port} inet n - n - {server.smtpd_maxproc} smtpd",
        "pickup unix n - n 60 1 pickup",
        "cleanup unix n - n - 0 cleanup",
        "qmgr unix n - n 300 1 qmgr",
        "rewrite unix - - n - - trivial-rewrite",
        "bounce unix - - n - 0 bounce",
        "defer unix - - n - 0 bounce",
        "trace unix - - n - 0 bounce",
        "verify unix - - n - 1 verify",
        "flush unix n - n 1000? 0 flush",
        "proxymap unix - - n - - proxymap",
        "proxywrite unix - - n - 1 proxymap",
        "smtp unix - - n - - smtp",
        "relay unix - - n - - smtp",
        "showq unix n - n - - showq",
        "error unix - - n - - error",
        "retry unix - - n - - error",
        "discard unix - - n - - discard",
        "local unix - n n - - local",
        "virtual unix - n n - - virtual",
        "lmtp unix - - n - - lmtp",
        "anvil unix - - n - 1 anvil",
        "scache unix - - n - 1 scache",
        "postlog unix-dgram n - n - 1 postlogd",
    ]
    if server.tls_files is not None:
        # Debian's master.cf.dist entry: smtpd asks tlsmgr for PRNG seed and ticket keys.
        services.append("tlsmgr unix - - n 1000? 1 tlsmgr")
    return "# Written by bench/postfix.py.\n" + "\n".join(services) + "\n"


@dataclass
class PostfixServer:
    """One private Postfix instance rooted at ``workdir/postfix``."""

    workdir: Path
    port: int = 10025
    # smtpd processes: >= 100 benchmark sessions and >= 1,000 idle connections (one each).
    smtpd_maxproc: int = 1100
    name: str = "postfix"
    # (certificate PEM, private key PEM): offer STARTTLS with them; None: no TLS at all.
    tls_files: tuple[Path, Path] | None = None
    # main.cf relayhost, e.g. "[127.0.0.1]:2525"; None: no relayhost line at all.
    relayhost: str | None = None

    @property
    def root(self) -> Path:
        return self.workdir / "postfix"

    @property
    def config_dir(self) -> Path:
        return self.root / "etc"

    @property
    def queue_dir(self) -> Path:
        return self.root / "spool"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def mail_base(self) -> Path:
        return self.root / "vmail"

    @property
    def log_file(self) -> Path:
        return self.root / "maillog"

    @property
    def maildir_new(self) -> Path:
        return self.mail_base / DOMAIN / MAILBOX / "Maildir" / "new"

    def configure(self) -> None:
        """Fresh instance: wipe ``root``, write main.cf/master.cf/map, create the Maildir."""
        if self.root.exists():
            shutil.rmtree(self.root)
        for directory in (self.config_dir, self.queue_dir, self.data_dir, self.mail_base):
            directory.mkdir(parents=True)
        (self.config_dir / "main.cf").write_text(_main_cf(self))
        (self.config_dir / "master.cf").write_text(_master_cf(self))
        (self.config_dir / "vmailbox").write_text(
            f"{MAILBOX}@{DOMAIN} {DOMAIN}/{MAILBOX}/Maildir/\n"
        )
        # virtual(8) would create the Maildir on first delivery; creating it now lets the
        # load driver count new/ from the start.
        maildir = self.maildir_new.parent
        for sub in ("new", "cur", "tmp"):
            (maildir / sub).mkdir(parents=True)
        for path in [self.mail_base, *self.mail_base.rglob("*")]:
            os.chown(path, VMAIL_ID, VMAIL_ID)
        # master.lock and the TLS caches live here; Postfix opens them as mail_owner.
        shutil.chown(self.data_dir, "postfix", "postfix")
        # `postfix check` creates the queue subdirectories with the right owners.
        self._postfix("check")

    def start(self, deadline_s: float = 30.0) -> None:
        self._postfix("start")
        _wait_for_port(self.port, deadline_s)

    def master_pid(self) -> int:
        return int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])

    def stop(self, deadline_s: float = 30.0) -> None:
        try:
            pid = self.master_pid()
        except (OSError, ValueError):
            return
        subprocess.run([str(POSTFIX), "-c", str(self.config_dir), "stop"], check=False)
        deadline = time.monotonic() + deadline_s
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, 9)

    def _postfix(self, command: str) -> None:
        subprocess.run([str(POSTFIX), "-c", str(self.config_dir), command], check=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_for_port(port: int, deadline_s: float) -> None:
    """Poll until 127.0.0.1:port accepts a connection and sends a 220 line."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                if sock.recv(512).startswith(b"220"):
                    sock.sendall(b"QUIT\r\n")
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing greets on 127.0.0.1:{port} after {deadline_s}s")
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["install", "start", "stop"])
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/qtoaster-bench"))
    parser.add_argument("--port", type=int, default=10025)
    args = parser.parse_args(argv)
    server = PostfixServer(args.workdir, args.port)
    if args.action == "install":
        install()
    elif args.action == "start":
        install()
        server.configure()
        server.start()
        print(f"postfix ready on 127.0.0.1:{server.port}, master pid {server.master_pid()}")
    else:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
