"""STARTTLS load against qtoaster and Postfix: handshakes per second, side by side.

One *run* is SESSIONS SMTP sessions, at most CONCURRENCY at once (one thread each), each on
a new TCP connection to 127.0.0.1: read 220, EHLO, STARTTLS, 220, TLS handshake, EHLO,
MAIL, RCPT ``user@bench.test``, DATA with 1 KB of body, QUIT.  The client is the same for
both servers: Python's ``ssl`` defaults (TLS 1.3), no certificate verification, no session
resumption (every handshake is a full one).

Figures per run:
- handshakes/s: completed sessions / (first connect -> last QUIT reply);
- handshake alone: ``wrap_socket`` (ClientHello to the server's Finished), median and p95;
- delivered msg/s: as in load.py, the clock stops when Maildir ``new/`` holds every
  message of a completed session (polled every 5 ms);
- CPU ms per session, of the server's process tree (utime+stime of the live processes plus
  the reaped children's cutime+cstime, from /proc) and of this client.

Both servers use the same certificate: qtoaster's own from ``qtoaster init`` (RSA 2048),
split into key and certificate for Postfix; optionally a second round with an EC P-256
certificate made here with ``cryptography`` (the project's venv) and installed with
``qtoaster cert install``.

Invariants: everything connects to and listens on 127.0.0.1 only; every run is bounded in
sessions and in time (``--deadline``; each socket operation times out after 30 s).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import socket
import ssl
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from load import POLL_S, count_files, empty_dir
from postfix import PostfixServer, install
from qtoaster_side import QtoasterServer

IO_TIMEOUT_S = 30.0
STALL_S = 30.0  # sessions done, no new file in new/ for this long: stop waiting
WARMUP = 50
BODY_BYTES = 1024
PLAIN = "none"  # the control round's name: the same sessions without STARTTLS
_PEM_KEY = re.compile(rb"-----BEGIN ([A-Z ]*PRIVATE KEY)-----.*?-----END \1-----\s*", re.DOTALL)
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\s*", re.DOTALL)

Server = PostfixServer | QtoasterServer


class SmtpError(Exception):
    """The server answered something the load did not expect."""


class Lines:
    """Reads SMTP replies (RFC 5321 4.2: ``NNN-`` continues, ``NNN `` ends) from a socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def reply(self) -> tuple[int, list[bytes]]:
        lines: list[bytes] = []
        while True:
            while b"\r\n" not in self.buffer:
                chunk = self.sock.recv(4096)
                if not chunk:
                    raise SmtpError(f"connection closed after {lines!r}")
                self.buffer += chunk
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            lines.append(line)
            if line[3:4] != b"-":
                return int(line[:3]), lines

    def command(self, text: bytes, expected: int) -> list[bytes]:
        self.sock.sendall(text + b"\r\n")
        return self.expect(expected, text)

    def expect(self, expected: int, after: bytes = b"connect") -> list[bytes]:
        code, lines = self.reply()
        if code != expected:
            raise SmtpError(f"{after[:20]!r}: expected {expected}, got {lines!r}")
        return lines


def message(index: int) -> bytes:
    head = (
        f"From: bench@client.test\r\nTo: user@bench.test\r\nSubject: tls {index}\r\n"
        f"Message-ID: <tls.{index}.{time.time_ns()}@client.test>\r\n\r\n"
    ).encode()
    line = b"x" * 62 + b"\r\n"  # never starts with "." (no dot-stuffing needed)
    body = (line * (BODY_BYTES // len(line) + 1))[:BODY_BYTES] + b"\r\n"
    return head + body + b".\r\n"


@dataclass
class Session:
    start: float  # perf_counter at connect
    handshake: float  # seconds in wrap_socket
    end: float  # perf_counter at the 221 after QUIT
    version: str


def one_session(port: int, ctx: ssl.SSLContext | None, index: int) -> Session:
    """One session; without ``ctx`` the same one in clear text (the control round)."""
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S) as plain:
        clear = Lines(plain)
        clear.expect(220)
        ehlo = clear.command(b"EHLO client.test", 250)
        if ctx is None:
            return _transaction(clear, index, start, 0.0, PLAIN)
        if not any(b"STARTTLS" in line.upper() for line in ehlo):
            raise SmtpError("EHLO does not offer STARTTLS")
        clear.command(b"STARTTLS", 220)
        if clear.buffer:
            raise SmtpError(f"clear text after the 220 to STARTTLS: {clear.buffer!r}")
        began = time.perf_counter()
        with ctx.wrap_socket(plain) as tls:
            handshake = time.perf_counter() - began
            smtp = Lines(tls)
            smtp.command(b"EHLO client.test", 250)  # RFC 3207 4.2: start over after TLS
            suite = f"{tls.version()} {(tls.cipher() or ('?',))[0]}"
            return _transaction(smtp, index, start, handshake, suite)


def _transaction(smtp: Lines, index: int, start: float, handshake: float, version: str) -> Session:
    smtp.command(b"MAIL FROM:<bench@client.test>", 250)
    smtp.command(b"RCPT TO:<user@bench.test>", 250)
    smtp.command(b"DATA", 354)
    smtp.sock.sendall(message(index))
    smtp.expect(250, b"DATA end")
    smtp.command(b"QUIT", 221)
    return Session(start, handshake, time.perf_counter(), version)


def client_context() -> ssl.SSLContext:
    """Python's client defaults (TLS 1.3 preferred), without verification: the
    certificates are self-signed, and both servers see exactly this ClientHello."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@dataclass
class Drive:
    sessions: list[Session] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def drive(port: int, total: int, concurrency: int, deadline: float, *, tls: bool = True) -> Drive:
    """``total`` sessions on ``concurrency`` threads; stops early at ``deadline``
    (monotonic) or after 20 errors."""
    ctx, out, lock = client_context() if tls else None, Drive(), threading.Lock()
    counter = iter(range(total))

    def worker() -> None:
        while time.monotonic() < deadline:
            with lock:
                index = next(counter, None)
                if index is None or len(out.errors) >= 20:
                    return
            try:
                result = one_session(port, ctx, index)
            except (OSError, SmtpError, ValueError) as exc:
                with lock:
                    out.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            with lock:
                out.sessions.append(result)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0.0) + IO_TIMEOUT_S)
    return out


def tree_cpu_s(root: int) -> float:
    """CPU seconds of ``root`` and its live descendants, plus their reaped children."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, list[str]]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            text = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue  # exited meanwhile
        fields = text.rpartition(")")[2].split()
        stats[int(name)] = (int(fields[1]), fields)  # ppid; fields[11:15]: utime..cstime
    wanted, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _) in stats.items():
            if ppid == parent and pid not in wanted:
                wanted.add(pid)
                frontier.append(pid)
    ticks = sum(sum(int(x) for x in stats[pid][1][11:15]) for pid in wanted if pid in stats)
    return ticks / tick


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Result:
    cert: str
    server: str
    sessions: int
    completed: int
    errors: list[str]
    seconds: float  # first connect -> last QUIT reply
    delivered: int
    delivered_seconds: float  # first connect -> last file in new/
    handshake_median_ms: float
    handshake_p95_ms: float
    server_cpu_ms: float  # per completed session
    client_cpu_ms: float
    version: str

    @property
    def handshakes_per_s(self) -> float:
        return self.completed / self.seconds if self.seconds > 0 else 0.0

    @property
    def delivered_per_s(self) -> float:
        return self.delivered / self.delivered_seconds if self.delivered_seconds > 0 else 0.0


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] if ordered else 0.0


def run_once(server: Server, cert: str, total: int, concurrency: int, deadline_s: float) -> Result:
    new = server.maildir_new
    empty_dir(new)
    cpu0, own0 = tree_cpu_s(server.master_pid()), own_cpu_s()
    origin, deadline = time.perf_counter(), time.monotonic() + deadline_s
    out = drive(server.port, total, concurrency, deadline, tls=cert != PLAIN)
    done = len(out.sessions)
    delivered, last_file = _wait_delivered(new, done, deadline, origin)
    cpu1, own1 = tree_cpu_s(server.master_pid()), own_cpu_s()
    first = min((s.start for s in out.sessions), default=origin)
    last = max((s.end for s in out.sessions), default=first)
    handshakes = [s.handshake * 1000 for s in out.sessions]
    per = max(done, 1)
    return Result(
        cert=cert,
        server=server.name,
        sessions=total,
        completed=done,
        errors=out.errors,
        seconds=last - first,
        delivered=delivered,
        delivered_seconds=(last_file or last) - first,
        handshake_median_ms=statistics.median(handshakes) if handshakes else 0.0,
        handshake_p95_ms=p95(handshakes),
        server_cpu_ms=(cpu1 - cpu0) * 1000 / per,
        client_cpu_ms=(own1 - own0) * 1000 / per,
        version=",".join(sorted({s.version for s in out.sessions})),
    )


def _wait_delivered(new: Path, wanted: int, deadline: float, origin: float) -> tuple[int, float]:
    """(files in new/, perf_counter when the count last grew) once ``wanted`` arrived, the
    deadline passed, or nothing arrived for STALL_S."""
    count, grew_at = 0, origin
    while True:
        now = time.perf_counter()
        seen = count_files(new)
        if seen > count:
            count, grew_at = seen, now
        if count >= wanted or time.monotonic() > deadline or now - grew_at > STALL_S:
            return count, grew_at
        time.sleep(POLL_S)


def split_pem(pem: bytes, directory: Path) -> tuple[Path, Path]:
    """servercert.pem (key and certificate chain in one file) -> (cert.pem, key.pem)."""
    key, certs = _PEM_KEY.search(pem), _PEM_CERT.findall(pem)
    if key is None or not certs:
        raise ValueError("servercert.pem holds no private key or no certificate")
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(b"".join(certs))
    key_path.write_bytes(key.group(0))
    key_path.chmod(0o600)
    return cert_path, key_path


def make_ec_cert(directory: Path, hostname: str = "mx.bench.test") -> tuple[Path, Path]:
    """A self-signed EC P-256 certificate and its key (needs ``cryptography``: the venv)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def line(r: Result) -> str:
    flag = f" ERRORS {len(r.errors)}: {r.errors[0]}" if r.errors else ""
    short = " INCOMPLETE" if r.delivered < r.completed or r.completed < r.sessions else ""
    return (
        f"  {r.cert:4} {r.server:8} {r.completed}/{r.sessions} sessions in {r.seconds:.2f}s"
        f" = {r.handshakes_per_s:.1f}/s, handshake median {r.handshake_median_ms:.2f} ms"
        f" p95 {r.handshake_p95_ms:.2f} ms, delivered {r.delivered} = {r.delivered_per_s:.1f}"
        f" msg/s, CPU/session server {r.server_cpu_ms:.2f} ms client {r.client_cpu_ms:.2f} ms"
        f" ({r.version}){short}{flag}"
    )


COLUMNS: list[tuple[str, Callable[[Result], float]]] = [
    ("sessions/s", lambda r: r.handshakes_per_s),
    ("hs med ms", lambda r: r.handshake_median_ms),
    ("hs p95 ms", lambda r: r.handshake_p95_ms),
    ("msg/s", lambda r: r.delivered_per_s),
    ("srv CPU ms", lambda r: r.server_cpu_ms),
    ("cli CPU ms", lambda r: r.client_cpu_ms),
]


def table(results: list[Result]) -> str:
    """Per certificate: one row per server (medians of the repeats), then the ratios
    qtoaster/Postfix (sessions/s and msg/s: above 1 = qtoaster faster; handshake times and
    CPU: below 1 = qtoaster cheaper)."""
    out = [f"{'cert':4} {'server':8} " + " ".join(f"{name:>11}" for name, _ in COLUMNS)]
    for cert in dict.fromkeys(r.cert for r in results):
        medians: dict[str, list[float]] = {}
        for server in ("postfix", "qtoaster"):
            runs = [r for r in results if r.cert == cert and r.server == server]
            if runs:
                medians[server] = [statistics.median(f(r) for r in runs) for _, f in COLUMNS]
                cells = " ".join(f"{v:>11.2f}" for v in medians[server])
                out.append(f"{cert:4} {server:8} {cells}")
        if len(medians) == 2:
            ratios = [
                f"{q / p:>11.2f}" if p else f"{'-':>11}"  # no handshake in the control round
                for q, p in zip(medians["qtoaster"], medians["postfix"], strict=True)
            ]
            out.append(f"{cert:4} {'ratio':8} " + " ".join(ratios))
    out.append("medians of the repeats; ratio = qtoaster / Postfix (bar: sessions/s >= 1.0)")
    return "\n".join(out)


def rounds(args: argparse.Namespace, qtoaster: QtoasterServer) -> list[tuple[str, Path, Path]]:
    """(name, cert, key) per certificate: init's RSA 2048 one, then EC P-256 unless --no-ec."""
    work: Path = args.workdir
    rsa = split_pem(qtoaster.servercert.read_bytes(), work / "cert-rsa")
    plan = [("rsa", *rsa)]
    if not args.no_ec:
        plan.append(("ec", *make_ec_cert(work / "cert-ec")))
    if args.plain:
        plan.append((PLAIN, *rsa))
    return plan


def run_round(
    servers: list[Server], cert: str, args: argparse.Namespace, total: int, repeat: int
) -> list[Result]:
    """Start every server, warm each up, then alternate them run by run (so drift in the
    machine's speed hits both alike), stop them all."""
    results: list[Result] = []
    started: list[Server] = []
    try:
        for server in servers:
            if isinstance(server, PostfixServer):
                server.configure()
            server.start()
            started.append(server)
            warm = run_once(server, cert, WARMUP, args.concurrency, args.deadline)
            print(f"  warm-up {line(warm).strip()}", flush=True)
        for _ in range(repeat):
            for server in started:
                result = run_once(server, cert, total, args.concurrency, args.deadline)
                print(line(result), flush=True)
                results.append(result)
    finally:
        for server in started:
            server.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="STARTTLS sessions/s, qtoaster vs Postfix")
    parser.add_argument("--quick", action="store_true", help="200 sessions, 1 repeat")
    parser.add_argument("--only", choices=["postfix", "qtoaster"], help="one server only")
    parser.add_argument("--sessions", type=int, help="per run (default 1000, --quick 200)")
    parser.add_argument("--concurrency", type=int, default=20, help="sessions at once")
    parser.add_argument("--repeat", type=int, help="runs per server (default 3, --quick 1)")
    parser.add_argument("--no-ec", action="store_true", help="skip the EC P-256 round")
    parser.add_argument("--plain", action="store_true", help="also a round without STARTTLS")
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/qtoaster-bench-tls"))
    parser.add_argument("--postfix-port", type=int, default=10028)
    parser.add_argument("--qtoaster-port", type=int, default=10029)
    parser.add_argument("--deadline", type=float, default=300.0, help="seconds per run")
    parser.add_argument("--json", type=Path, help="also write every run here")
    args = parser.parse_args(argv)
    total = args.sessions or (200 if args.quick else 1000)
    repeat = args.repeat or (1 if args.quick else 3)

    install()
    args.workdir.mkdir(parents=True, exist_ok=True)
    qtoaster = QtoasterServer(args.workdir, port=args.qtoaster_port)
    qtoaster.configure()  # always: its init makes the RSA certificate both servers use
    results: list[Result] = []
    for cert, cert_file, key_file in rounds(args, qtoaster):
        print(f"round {cert}: {'no STARTTLS' if cert == PLAIN else cert_file}", flush=True)
        qtoaster.install_cert(cert_file, key_file)
        postfix = PostfixServer(
            args.workdir, port=args.postfix_port, tls_files=(cert_file, key_file)
        )
        servers: list[Server] = [s for s in (postfix, qtoaster) if args.only in (None, s.name)]
        results += run_round(servers, cert, args, total, repeat)
    print()
    print(table(results))
    if args.json:
        payload = [
            asdict(r)
            | {"handshakes_per_s": r.handshakes_per_s, "delivered_per_s": r.delivered_per_s}
            for r in results
        ]
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
