"""A real ACME CA for tests: Debian's ``pebble`` on 127.0.0.1, free high ports.

Pebble's own HTTPS certificate (for its API) is issued by a throw-away CA made here
(tests/tls/pki.py); ``ca_bundle`` is that CA's file, for ``cert acme --ca-bundle``. Names
are resolved through the DNS server the test gives (tests/dnsserver.py), and HTTP-01 is
checked on ``http_port`` of the address they resolve to. ``PEBBLE_VA_NOSLEEP=1`` (no
random validation delay) and ``PEBBLE_WFE_NONCEREJECT=0`` (no random badNonce) keep a run
fast and deterministic. Readiness is polled with a deadline on the directory URL.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path
from types import TracebackType

import httpx
from cryptography import x509
from tests.tls.pki import PrivateCA

START_TIMEOUT = 15.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Pebble:
    """``with Pebble(workdir, dns="127.0.0.1:PORT", http_port=N) as pebble:``."""

    def __init__(self, workdir: Path, *, dns: str, http_port: int) -> None:
        self.dir = workdir
        self.dns = dns
        self.http_port = http_port
        self.port = 0
        self.management_port = 0
        self.ca_bundle = workdir / "pebble-api-ca.pem"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def directory(self) -> str:
        return f"https://localhost:{self.port}/dir"

    def __enter__(self) -> Pebble:
        binary = shutil.which("pebble") or "/usr/bin/pebble"
        self.dir.mkdir(parents=True, exist_ok=True)
        ca = PrivateCA("pebble API test CA")
        _, pem = ca.issue("localhost", dns=["localhost"])
        (self.dir / "pebble-api.pem").write_bytes(pem)
        self.ca_bundle.write_bytes(ca.cert_pem)
        self.port, self.management_port = free_port(), free_port()
        config = {
            "pebble": {
                "listenAddress": f"127.0.0.1:{self.port}",
                "managementListenAddress": f"127.0.0.1:{self.management_port}",
                "certificate": str(self.dir / "pebble-api.pem"),
                "privateKey": str(self.dir / "pebble-api.pem"),
                "httpPort": self.http_port,
                "tlsPort": free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
            }
        }
        (self.dir / "pebble.json").write_text(json.dumps(config))
        env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
        self._log = open(self.dir / "pebble.log", "ab")
        self._proc = subprocess.Popen(
            [binary, "-config", str(self.dir / "pebble.json"), "-dnsserver", self.dns],
            env=env,
            stdout=self._log,
            stderr=self._log,
        )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(f"pebble exited: {self.log()}")
            try:
                httpx.get(self.directory, verify=self._trust(), timeout=1).raise_for_status()
                return
            except httpx.HTTPError:
                time.sleep(0.05)  # poll interval, bounded by the deadline
        raise RuntimeError(f"pebble did not start: {self.log()}")

    def _trust(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_bundle))

    def _management(self, path: str) -> bytes:
        url = f"https://localhost:{self.management_port}{path}"
        response = httpx.get(url, verify=self._trust(), timeout=5)
        response.raise_for_status()
        return response.content

    def intermediate(self) -> x509.Certificate:
        """The certificate that signs what pebble issues (it makes a new one per start)."""
        return x509.load_pem_x509_certificates(self._management("/intermediates/0"))[0]

    def log(self) -> str:
        path = self.dir / "pebble.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
            self._log.close()
