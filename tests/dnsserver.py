"""A real DNS server for tests: dnsmasq on 127.0.0.1, a free high port, UDP and TCP.

dnsmasq (Debian package ``dnsmasq``; ``dnsmasq-base`` is enough) serves a `Zone` from
a generated configuration file: MX, A/AAAA (each with its PTR), TXT, PTR and SRV records
(dnsmasq splits a TXT text longer than 255 bytes into 255-byte strings); every name under one of the
zone's domains that is not listed is NXDOMAIN (``local=/domain/``); names outside the
domains are REFUSED, which resolvers treat as a temporary failure.  A lone ``0 .`` MX
(null MX, RFC 7505) is served as written.  UDP answers over 512 bytes come back
truncated (TC), so clients must retry over TCP, as a real resolver would make them.

Readiness is polled with a deadline by querying the server (no sleeps); a start takes a
few milliseconds.  Works as root (dnsmasq is told to stay the current user instead of
switching to ``nobody``) and as a normal user (a high port needs no capability).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import dns.exception
import dns.message
import dns.query

START_TIMEOUT = 5.0
_DNSMASQ_PATHS = ("/usr/sbin/dnsmasq", "/usr/bin/dnsmasq")


class DnsmasqMissing(RuntimeError):
    pass


@dataclass
class Zone:
    """What the server answers.  Names are written without the trailing dot."""

    domains: tuple[str, ...] = ("test",)  # authoritative: unlisted names below = NXDOMAIN
    mx: list[tuple[str, int, str]] = field(default_factory=list)  # (domain, pref, target)
    hosts: list[tuple[str, str]] = field(default_factory=list)  # (name, IPv4 or IPv6)
    txt: list[tuple[str, str]] = field(default_factory=list)  # (name, text)
    ptr: list[tuple[str, str]] = field(default_factory=list)  # (reverse name, target)
    # (name, target, port, priority, weight); target "": the "." of "service not offered"
    srv: list[tuple[str, str, int, int, int]] = field(default_factory=list)
    nxdomain: list[str] = field(default_factory=list)  # extra NXDOMAIN names (and below)
    ttl: int = 0  # TTL of every answer (0: resolvers do not cache)

    def config_lines(self) -> list[str]:
        lines = [f"local=/{domain}/" for domain in (*self.domains, *self.nxdomain)]
        lines += [f"mx-host={domain},{target},{pref}" for domain, pref, target in self.mx]
        lines += [f"host-record={name},{address}" for name, address in self.hosts]
        lines += [f"ptr-record={name},{target}" for name, target in self.ptr]
        for name, target, port, priority, weight in self.srv:
            lines.append(
                f"srv-host={name},{target},{port},{priority},{weight}"
                if target
                else f"srv-host={name}"
            )
        for name, text in self.txt:
            if any(char in text for char in '"\\\n'):
                raise ValueError(f"TXT text {text!r}: quotes, backslashes, newlines unsupported")
            lines.append(f'txt-record={name},"{text}"')
        return lines


def find_dnsmasq() -> str:
    for path in (shutil.which("dnsmasq"), *_DNSMASQ_PATHS):
        if path and os.access(path, os.X_OK):
            return path
    raise DnsmasqMissing("dnsmasq not found: install the Debian package dnsmasq-base")


def _free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 right now."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


class DnsServer:
    """``with DnsServer(zone) as address:`` gives ``"127.0.0.1:PORT"``."""

    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        self.port = 0
        self._dnsmasq = find_dnsmasq()
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> str:
        self._dir = Path(tempfile.mkdtemp(prefix="qtoaster-dns-"))
        for _ in range(5):  # another process may grab the port between check and bind
            self.port = _free_port()
            self._process = self._spawn()
            if self._wait_ready():
                return self.address
        self.stop()
        raise RuntimeError(f"dnsmasq did not start: {self.log()}")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def log(self) -> str:
        """dnsmasq's messages so far (for failure reports)."""
        path = self._dir / "dnsmasq.log" if self._dir else None
        return path.read_text(errors="replace") if path and path.exists() else ""

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _spawn(self) -> subprocess.Popen[bytes]:
        assert self._dir is not None
        conf = self._dir / "dnsmasq.conf"
        options = [
            f"port={self.port}",
            "listen-address=127.0.0.1",
            "bind-interfaces",
            "no-resolv",
            "no-hosts",
            "no-negcache",
            f"local-ttl={self.zone.ttl}",
            f"pid-file={self._dir / 'dnsmasq.pid'}",
            f"user={pwd.getpwuid(os.geteuid()).pw_name}",  # do not switch to nobody
            "log-facility=-",
            "log-queries",
        ]
        conf.write_text("\n".join(options + self.zone.config_lines()) + "\n")
        with open(self._dir / "dnsmasq.log", "ab") as log:
            return subprocess.Popen(
                [self._dnsmasq, "--keep-in-foreground", f"--conf-file={conf}"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )

    def _wait_ready(self) -> bool:
        """Query until any answer comes back; False if dnsmasq exited (port taken?)."""
        assert self._process is not None
        query = dns.message.make_query("readiness.probe.invalid", "A")
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                dns.query.udp(query, "127.0.0.1", port=self.port, timeout=0.05)
                return True
            except (OSError, dns.exception.Timeout):
                pass
            try:
                self._process.wait(timeout=0.005)  # the poll interval; also notices an exit
                return False
            except subprocess.TimeoutExpired:
                continue
        return False
