"""Mail authentication benchmark (issue 14): what DKIM signing and SPF+DKIM+DMARC
verification cost end to end, each against the same qtoaster without them, same run.

Two parts, each two qtoaster homes of the same checkout started side by side, alternated
run by run (ABAB...), so a slow spell of the shared machine hits both:

- ``sign``: submission-style relaying. smtp-source sends from 127.0.0.1 (RELAYCLIENT in
  the default tcp.smtp, so the mail is "ours") for ``user@relay.test``, routed by
  ``control/smtproutes`` to one ``smtp-sink``. Home ``plain`` has no DKIM key; home
  ``dkim`` hosts ``client.test`` (the From domain) with ``qtoaster dkim keygen --active``'s
  two keys (RSA-2048 and Ed25519), so every message leaves with two signatures. Clock: from
  the launch of smtp-source until the sink counted all M messages.
- ``verify``: port-25 mail for the local mailbox ``user@bench.test`` from a client that
  may not relay (tcp.smtp ``:allow``), each message signed beforehand with RSA-2048 and
  Ed25519 for ``client.test`` (``smtp-source -F``). A dnsmasq on loopback
  (tests/dnsserver.py) publishes client.test's SPF (``ip4:127.0.0.1 -all``), both DKIM
  keys and DMARC ``p=reject``; both homes use it (``[dns] nameservers``), and its TTL lets
  the resolvers cache (the issue's "cached DNS"). Home ``plain`` has ``[mailauth]``
  switched off, home ``verify`` on. Clock: until the Maildir's new/ holds M files.

Loads: 20 sessions, 1 KB and 100 KB bodies (smtp-source ``-l``, or the signed file's
size). The bar: each ``dkim``/``verify`` rate is at least 0.90 of ``plain``'s. Server
CPU (utime+stime of the process tree, reaped children included) per message is printed
for both, and its difference is the cost of signing or verifying.

Needs root for nothing but smtp-source/smtp-sink (Postfix's package: bench/postfix.py
installs it when missing). Loopback only; every run is bounded in count and time.
"""

from __future__ import annotations

import argparse
import base64
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from idle_memory import tree_cpu
from load import count_files, empty_dir
from postfix import SMTP_SOURCE, install
from qtoaster_side import QTOASTER, QtoasterServer
from relay import Sink, free_port

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from dnsserver import DnsServer, Zone  # the tests' dnsmasq, reused

FROM = "bench@client.test"
SIZES = (1024, 102400)
SESSIONS = 20
POLL_S = 0.005
STALL_S = 30.0


@dataclass
class Run:
    part: str
    home: str
    size: int
    messages: int
    done: int
    seconds: float
    cpu: float

    @property
    def rate(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0


def counts(quick: bool) -> dict[int, int]:
    return {1024: 300, 102400: 100} if quick else {1024: 1500, 102400: 400}


def source_argv(
    port: int, messages: int, size: int, recipient: str, body: Path | None
) -> list[str]:
    argv = [str(SMTP_SOURCE), "-s", str(SESSIONS), "-m", str(messages), "-f", FROM]
    argv += ["-t", recipient, "-M", "client.test"]
    argv += ["-F", str(body)] if body is not None else ["-l", str(size)]
    return [*argv, f"127.0.0.1:{port}"]


def wait_until(
    done: Callable[[], int], target: int, source: subprocess.Popen[bytes], deadline: float
) -> int:
    """Poll ``done()`` until it reaches ``target``, the deadline, or a stall after
    smtp-source exited; the count reached."""
    seen, progress = 0, time.monotonic()
    while True:
        now = time.monotonic()
        count = done()
        if count > seen:
            seen, progress = count, now
        if seen >= target or now > deadline:
            return seen
        if source.poll() is not None and now - progress > STALL_S:
            return seen
        time.sleep(POLL_S)


def sign_run(server: QtoasterServer, sink: Sink, size: int, messages: int, limit: float) -> Run:
    base = sink.count
    cpu = tree_cpu(server.master_pid())
    start = time.monotonic()
    source = subprocess.Popen(
        source_argv(server.port, messages, size, "user@relay.test", None),
        stdout=subprocess.DEVNULL,
    )
    done = wait_until(lambda: sink.count - base, messages, source, start + limit)
    seconds = time.monotonic() - start
    if source.poll() is None:
        source.kill()  # our own child, by its pid
    source.wait()
    return Run(
        "sign", server.name, size, messages, done, seconds, tree_cpu(server.master_pid()) - cpu
    )


def verify_run(server: QtoasterServer, body: Path, size: int, messages: int, limit: float) -> Run:
    new = server.maildir_new
    empty_dir(new)
    cpu = tree_cpu(server.master_pid())
    start = time.monotonic()
    source = subprocess.Popen(
        source_argv(server.port, messages, size, "user@bench.test", body),
        stdout=subprocess.DEVNULL,
    )
    done = wait_until(lambda: count_files(new), messages, source, start + limit)
    seconds = time.monotonic() - start
    if source.poll() is None:
        source.kill()  # our own child, by its pid
    source.wait()
    return Run(
        "verify", server.name, size, messages, done, seconds, tree_cpu(server.master_pid()) - cpu
    )


def qtoaster(server: QtoasterServer, *args: str) -> None:
    subprocess.run(
        [str(server.qtoaster), *args, "--home", str(server.home)],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def dkim_keys() -> tuple[list[tuple[str, str]], bytes, bytes]:
    """Fresh RSA-2048 and Ed25519 keys for client.test: their TXT records, and the two
    private keys as dkimpy takes them (PEM, and the raw Ed25519 seed in base64)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_pem = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    rsa_pub = rsa_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    ed_key = ed25519.Ed25519PrivateKey.generate()
    ed_seed = ed_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    ed_pub = ed_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    txt = [
        ("br._domainkey.client.test", "v=DKIM1; k=rsa; p=" + base64.b64encode(rsa_pub).decode()),
        ("be._domainkey.client.test", "v=DKIM1; k=ed25519; p=" + base64.b64encode(ed_pub).decode()),
    ]
    return txt, rsa_pem, base64.b64encode(ed_seed)


def signed_message(path: Path, size: int, rsa_pem: bytes, ed_seed: bytes) -> Path:
    """A message of about ``size`` body bytes, signed by both keys (dkimpy), CRLF-free
    lines as smtp-source -F wants them (it appends CRLF to each line)."""
    import dkim

    line = b"the quick brown fox jumps over the lazy dog, again and again 0123456789\r\n"
    body = line * max(1, size // len(line))
    head = (
        b"From: Bench <bench@client.test>\r\nTo: <user@bench.test>\r\n"
        b"Subject: mail authentication benchmark\r\n"
        b"Date: Mon, 07 Dec 2026 00:00:00 +0000\r\nMessage-ID: <bench@client.test>\r\n"
    )
    message = head + b"\r\n" + body
    sigs = dkim.sign(message, b"br", b"client.test", rsa_pem)
    sigs += dkim.sign(
        message, b"be", b"client.test", ed_seed, signature_algorithm=b"ed25519-sha256"
    )
    path.write_bytes((sigs + message).replace(b"\r\n", b"\n"))
    return path


def ratio_table(runs: list[Run], base: str, other: str) -> str:
    lines = [
        f"{'size':>7} {base + ' msg/s':>14} {other + ' msg/s':>14} {'ratio':>6}"
        f" {'cpu ms/msg ' + base:>18} {'cpu ms/msg ' + other:>18} {'cost ms':>8}"
    ]
    for size in SIZES:

        def med(home: str, attr: str, size: int = size) -> float:
            values = [
                getattr(r, attr) if attr == "rate" else 1000 * r.cpu / max(1, r.done)
                for r in runs
                if r.home == home and r.size == size
            ]
            return statistics.median(values) if values else 0.0

        a, b = med(base, "rate"), med(other, "rate")
        ca, cb = med(base, "cpu"), med(other, "cpu")
        lines.append(
            f"{size:>7} {a:>14.1f} {b:>14.1f} {b / a if a else 0:>6.2f}"
            f" {ca:>18.2f} {cb:>18.2f} {cb - ca:>8.2f}"
        )
    return "\n".join(lines)


def show(run: Run) -> None:
    flag = "" if run.done >= run.messages else " INCOMPLETE"
    print(
        f"  {run.part:6} {run.home:7} {run.size:>6}B {run.done}/{run.messages} in"
        f" {run.seconds:.2f}s = {run.rate:.1f} msg/s, server cpu {run.cpu:.2f}s{flag}",
        flush=True,
    )


def part_sign(args: argparse.Namespace) -> list[Run]:
    sink = Sink(free_port())
    sink.start()
    routes = {"smtproutes": f":127.0.0.1:{sink.port}\n"}
    servers = [
        QtoasterServer(
            args.workdir / "plain",
            port=free_port(),
            name="plain",
            control_files=routes,
            qtoaster=args.qtoaster,
        ),
        QtoasterServer(
            args.workdir / "dkim",
            port=free_port(),
            name="dkim",
            control_files=routes,
            qtoaster=args.qtoaster,
        ),
    ]
    runs: list[Run] = []
    try:
        for server in servers:
            server.workdir.mkdir(parents=True, exist_ok=True)
            server.configure()
        qtoaster(servers[1], "domain", "add", "client.test")
        qtoaster(servers[1], "dkim", "keygen", "client.test", "--active")
        for server in servers:
            server.start()
            sign_run(server, sink, 1024, 50, args.deadline)  # warm-up
        for size in SIZES:
            for _ in range(args.repeat):
                for server in servers:
                    runs.append(
                        sign_run(server, sink, size, counts(args.quick)[size], args.deadline)
                    )
                    show(runs[-1])
    finally:
        for server in servers:
            server.stop()
        sink.stop()
    return runs


def part_verify(args: argparse.Namespace) -> list[Run]:
    txt, rsa_pem, ed_seed = dkim_keys()
    zone = Zone(
        domains=("client.test",),
        hosts=[("client.test", "127.0.0.1")],
        txt=[
            ("client.test", "v=spf1 ip4:127.0.0.1 -all"),
            ("_dmarc.client.test", "v=DMARC1; p=reject"),
            *txt,
        ],
        ttl=3600,
    )
    dns = DnsServer(zone)
    address = dns.start()
    servers = [
        QtoasterServer(
            args.workdir / "plain",
            port=free_port(),
            name="plain",
            settings={"dns": {"nameservers": f'["{address}"]'}, "mailauth": {"enabled": "false"}},
            qtoaster=args.qtoaster,
        ),
        QtoasterServer(
            args.workdir / "verify",
            port=free_port(),
            name="verify",
            settings={"dns": {"nameservers": f'["{address}"]'}, "mailauth": {"enabled": "true"}},
            qtoaster=args.qtoaster,
        ),
    ]
    bodies = {
        size: signed_message(args.workdir / f"signed-{size}.eml", size, rsa_pem, ed_seed)
        for size in SIZES
    }
    runs: list[Run] = []
    try:
        for server in servers:
            server.workdir.mkdir(parents=True, exist_ok=True)
            server.configure()
            (server.home / "tcp.smtp").write_text(":allow\n")  # nobody relays: port-25 mail
        for server in servers:
            server.start()
            verify_run(server, bodies[1024], 1024, 50, args.deadline)  # warm-up, DNS cached
        for size in SIZES:
            for _ in range(args.repeat):
                for server in servers:
                    runs.append(
                        verify_run(
                            server, bodies[size], size, counts(args.quick)[size], args.deadline
                        )
                    )
                    show(runs[-1])
        sample = next(iter(sorted(servers[1].maildir_new.iterdir())), None)
        if sample is not None:
            ar = [
                ln
                for ln in sample.read_bytes().split(b"\n\n", 1)[0].split(b"\n")
                if ln.lower().startswith(b"authentication-results")
            ]
            print(f"  a delivered message's header: {ar[0].decode() if ar else 'NO A-R HEADER'}")
    finally:
        for server in servers:
            server.stop()
        dns.stop()
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["sign", "verify", "both"], default="both")
    parser.add_argument("--quick", action="store_true", help="300 / 100 messages, 1 repeat")
    parser.add_argument("--repeat", type=int, help="runs per load and home (3; --quick 1)")
    parser.add_argument("--deadline", type=float, default=300.0, help="seconds per run")
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/qtoaster-bench-mailauth"))
    parser.add_argument("--keep", action="store_true", help="leave the workdir in place")
    parser.add_argument("--qtoaster", type=Path, default=QTOASTER, help="the binary to run")
    args = parser.parse_args(argv)
    args.repeat = args.repeat or (1 if args.quick else 3)
    install()
    if args.workdir.exists():
        shutil.rmtree(args.workdir)
    args.workdir.mkdir(parents=True)
    args.workdir.chmod(0o755)  # started as root, each role's own user must reach its home
    report: list[str] = []
    try:
        if args.part in ("sign", "both"):
            print("DKIM signing (relay, 20 sessions):", flush=True)
            report += [
                "DKIM signing, RSA-2048 + Ed25519, relayed to smtp-sink:",
                ratio_table(part_sign(args), "plain", "dkim"),
            ]
        if args.part in ("verify", "both"):
            print("SPF+DKIM+DMARC verification (port 25, local delivery, 20 sessions):", flush=True)
            report += [
                "SPF + DKIM (2 signatures) + DMARC verification, port 25:",
                ratio_table(part_verify(args), "plain", "verify"),
            ]
    finally:
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
