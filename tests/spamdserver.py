"""A real spamd for tests: Debian's ``/usr/sbin/spamd`` on 127.0.0.1, hermetic.

Flags: ``-L`` (local tests only: no DNS, no network), ``-x`` (no per-user config),
``-C`` (the rules), ``--siteconfigpath`` (a site directory of ours: the plugin ``.pre``
files and a ``local.cf`` that turns Bayes off), ``-H`` (HOME in our directory),
``-m`` children, ``-r`` pidfile, ``-s stderr`` (log to our file, never syslog),
``-i 127.0.0.1:PORT``.  As root spamd drops its children to ``-u nobody``; our files are
then world-readable.

Rules: ``rules="shipped"`` (default) uses the rules the Debian package ships in
/usr/share/spamassassin (they contain ``body GTUBE`` with ``score GTUBE 1000``; sa-update
never ran here, so /var/lib/spamassassin holds no newer set) with the package's plugin
list copied from /etc/spamassassin/*.pre: ready in about 1 s.  ``rules="minimal"``
writes only the Check plugin and our own GTUBE rule scoring 1000: ready in about 0.2 s.

spamd runs in its own session so :func:`stop_group` kills the parent and its forked
children together; readiness is ``PING SPAMC/1.5`` -> ``PONG`` against a deadline.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from tests.clamdserver import free_port, spawn_group, stop_group

START_TIMEOUT = 60.0  # the shipped rules take ~1 s idle; much longer on a loaded machine
SPAMD = "/usr/sbin/spamd"
SHIPPED_RULES = Path("/usr/share/spamassassin")
PACKAGE_SITE = Path("/etc/spamassassin")

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
_GTUBE_RULE = (
    "loadplugin Mail::SpamAssassin::Plugin::Check\n"
    r"body GTUBE /XJS\*C4JDBQADN1\.NSBN3\*2IDNEN\*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL\*C\.34X/"
    "\nscore GTUBE 1000\n"
)
_LOCAL_CF = "use_bayes 0\nbayes_auto_learn 0\nrequired_score 5.0\n"


class SpamdServer:
    """``with SpamdServer() as spamd:``; then ``spamd.address`` is ``127.0.0.1:PORT``."""

    def __init__(self, *, rules: str = "shipped", children: int = 2) -> None:
        if not os.access(SPAMD, os.X_OK):
            raise RuntimeError(f"{SPAMD} missing: install the Debian package spamd")
        if rules not in ("shipped", "minimal"):
            raise ValueError(f"rules={rules!r}: 'shipped' or 'minimal'")
        self.rules, self.children = rules, children
        self.port = 0
        self.started_in = 0.0  # seconds from spawn to the first PONG
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> SpamdServer:
        self._dir = Path(tempfile.mkdtemp(prefix="qtoaster-spamd-"))
        rules = self._write_config()
        began = time.monotonic()
        for _ in range(5):  # another process may take the port between check and bind
            self.port = free_port()
            self._process = spawn_group(self._command(rules), self._dir / "spamd.log")
            if self._wait_ready():
                self.started_in = time.monotonic() - began
                return self
            stop_group(self._process)
        log = self.log()
        self.stop()
        raise RuntimeError(f"spamd did not start:\n{log}")

    def stop(self) -> None:
        if self._process is not None:
            stop_group(self._process)
            self._process = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def log(self) -> str:
        """spamd's log so far (for failure reports)."""
        path = self._dir / "spamd.log" if self._dir else None
        return path.read_text(errors="replace") if path and path.exists() else ""

    def __enter__(self) -> SpamdServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _write_config(self) -> Path:
        """The site directory (and, for minimal rules, the rules directory); returns -C."""
        assert self._dir is not None
        site = self._dir / "site"
        site.mkdir()
        (site / "local.cf").write_text(_LOCAL_CF)
        if self.rules == "shipped" and (SHIPPED_RULES / "50_scores.cf").exists():
            for pre in sorted(PACKAGE_SITE.glob("*.pre")):
                shutil.copy(pre, site / pre.name)
            rules = SHIPPED_RULES
        else:
            rules = self._dir / "rules"
            rules.mkdir()
            (rules / "20_gtube.cf").write_text(_GTUBE_RULE)
        for path in (self._dir, *self._dir.rglob("*")):  # readable by -u nobody
            path.chmod(0o755 if path.is_dir() else 0o644)
        return rules

    def _command(self, rules: Path) -> list[str]:
        assert self._dir is not None
        command = [SPAMD, "-L", "-x", "-C", str(rules), f"--siteconfigpath={self._dir / 'site'}"]
        command += [f"--helper-home-dir={self._dir}", f"--listen=127.0.0.1:{self.port}"]
        command += ["--syslog=stderr"]
        command += [f"--max-children={self.children}", "--min-children=1", "--min-spare=1"]
        command += [f"--max-spare={self.children}", f"--pidfile={self._dir / 'spamd.pid'}"]
        if os.geteuid() == 0:
            command.append("--username=nobody")  # spamd will not run children as root
        return command

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                sock.sendall(b"PING SPAMC/1.5\r\n\r\n")
                return b" 0 PONG" in sock.recv(64)
        except OSError:
            return False

    def _wait_ready(self) -> bool:
        """PING until PONG; False if spamd exited (port taken?) or the deadline passed."""
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._ping():
                return True
            try:
                self._process.wait(timeout=0.01)  # the poll interval; also notices an exit
                return False
            except subprocess.TimeoutExpired:
                continue
        return False
