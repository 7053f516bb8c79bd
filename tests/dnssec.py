"""A DNSSEC-validating resolver for tests: nsd serves zones (some signed), unbound validates.

`SignedDns(zones)` writes each `SignedZone` as a zone file; zones with ``signed=True`` are
signed with ``ldns-keygen`` (ECDSA P-256, a KSK and a ZSK) and ``ldns-signzone`` (Debian
ldnsutils).  nsd (authoritative) and unbound (validating, a trust anchor for every signed
zone, a stub-zone per zone to nsd) run as the current user on 127.0.0.1 at free ports,
their files in a temporary directory.  Names of an unsigned zone come back without the AD
bit (insecure), names of a signed one with it.  Readiness is polled with a deadline by
querying each server; nothing sleeps.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import dns.exception
import dns.flags
import dns.message
import dns.query
from tests.dnsserver import _free_port

START_TIMEOUT = 10.0


@dataclass
class SignedZone:
    origin: str  # e.g. "sec.test", without the trailing dot
    records: list[str] = field(default_factory=list)  # zone file lines, names relative or FQDN
    signed: bool = True


class SignedDns:
    """``with SignedDns([...]) as resolver:`` gives unbound's ``"127.0.0.1:PORT"``."""

    def __init__(self, zones: list[SignedZone]) -> None:
        self.zones = zones
        self._dir: Path | None = None
        self._procs: list[subprocess.Popen[bytes]] = []
        self.nsd_port = 0
        self.port = 0

    def start(self) -> str:
        self._dir = Path(tempfile.mkdtemp(prefix="qtoaster-dnssec-"))
        try:
            anchors = [self._write_zone(zone) for zone in self.zones]
            self.nsd_port = _free_port()
            self._procs.append(self._spawn_nsd())
            self._wait(self.nsd_port, self.zones[0].origin, "nsd")
            self.port = _free_port()
            self._procs.append(self._spawn_unbound([a for a in anchors if a]))
            self._wait(self.port, self.zones[0].origin, "unbound")
        except BaseException:
            self.stop()
            raise
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        for proc in reversed(self._procs):
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs = []
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- zones ---------------------------------------------------------------------------

    def _write_zone(self, zone: SignedZone) -> str:
        """Write (and sign) the zone file; the trust anchor (DS line) or ""."""
        assert self._dir is not None
        origin = zone.origin + "."
        lines = [
            f"$ORIGIN {origin}",
            "$TTL 300",
            f"@ IN SOA ns.{origin} hostmaster.{origin} 1 3600 600 86400 300",
            f"@ IN NS ns.{origin}",
            "ns IN A 127.0.0.1",
            *zone.records,
        ]
        path = self._dir / f"{zone.origin}.zone"
        path.write_text("\n".join(lines) + "\n")
        if not zone.signed:
            return ""
        keygen = ["ldns-keygen", "-a", "ECDSAP256SHA256"]
        ksk = self._run([*keygen, "-k", origin]).strip()
        zsk = self._run([*keygen, origin]).strip()
        self._run(["ldns-signzone", "-f", str(path) + ".signed", str(path), zsk, ksk])
        path.with_name(path.name + ".signed").replace(path)
        return (self._dir / f"{ksk}.ds").read_text().strip()

    def _run(self, argv: list[str]) -> str:
        done = subprocess.run(argv, cwd=self._dir, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {done.stderr.strip()}")
        return done.stdout

    # -- servers -------------------------------------------------------------------------

    def _spawn_nsd(self) -> subprocess.Popen[bytes]:
        assert self._dir is not None
        d = self._dir
        zones = "".join(
            f'zone:\n  name: "{z.origin}"\n  zonefile: "{d}/{z.origin}.zone"\n' for z in self.zones
        )
        conf = d / "nsd.conf"
        conf.write_text(
            "server:\n"
            f"  ip-address: 127.0.0.1@{self.nsd_port}\n"
            '  username: ""\n  chroot: ""\n'
            f'  zonesdir: "{d}"\n  pidfile: "{d}/nsd.pid"\n  database: ""\n'
            f'  xfrdfile: "{d}/xfrd.state"\n  zonelistfile: "{d}/zone.list"\n'
            f'  logfile: "{d}/nsd.log"\n  server-count: 1\n  verbosity: 1\n'
            "remote-control:\n  control-enable: no\n" + zones
        )
        log = (d / "nsd.out").open("wb")
        return subprocess.Popen(["nsd", "-d", "-c", str(conf)], stdout=log, stderr=log)

    def _spawn_unbound(self, anchors: list[str]) -> subprocess.Popen[bytes]:
        assert self._dir is not None
        d = self._dir
        (d / "anchors").write_text("\n".join(anchors) + "\n")
        stubs = "".join(
            f'stub-zone:\n  name: "{z.origin}"\n  stub-addr: 127.0.0.1@{self.nsd_port}\n'
            for z in self.zones
        )
        insecure = "".join(f'  domain-insecure: "{z.origin}"\n' for z in self.zones if not z.signed)
        conf = d / "unbound.conf"
        conf.write_text(
            "server:\n"
            f"  interface: 127.0.0.1\n  port: {self.port}\n"
            '  username: ""\n  chroot: ""\n'
            f'  directory: "{d}"\n  pidfile: "{d}/unbound.pid"\n'
            f'  logfile: "{d}/unbound.log"\n  use-syslog: no\n'
            "  do-ip6: no\n  do-not-query-localhost: no\n"
            "  access-control: 127.0.0.0/8 allow\n"
            '  local-zone: "test." nodefault\n'
            '  module-config: "validator iterator"\n'
            f'  trust-anchor-file: "{d}/anchors"\n'
            "  qname-minimisation: no\n  val-log-level: 2\n"
            + insecure
            + "remote-control:\n  control-enable: no\n"
            + stubs
        )
        log = (d / "unbound.out").open("wb")
        return subprocess.Popen(["unbound", "-d", "-c", str(conf)], stdout=log, stderr=log)

    def _wait(self, port: int, name: str, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        query = dns.message.make_query(name + ".", "SOA")
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self._procs):
                break
            try:
                dns.query.udp(query, "127.0.0.1", port=port, timeout=0.2)
                return
            except (dns.exception.Timeout, OSError):
                continue
        raise RuntimeError(f"{what} did not start: {self.log()}")

    def log(self) -> str:
        if self._dir is None:
            return ""
        parts = []
        for name in ("nsd.out", "nsd.log", "unbound.out", "unbound.log"):
            path = self._dir / name
            if path.exists():
                parts.append(f"--- {name}\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)
