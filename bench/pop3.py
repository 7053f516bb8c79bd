"""POP3 benchmark: qtoaster's pop3d against Dovecot's POP3 server on loopback (issue 5).

Same users, passwords and messages on both sides: M mailboxes (20) of N messages (1,000)
of exactly 10,240 bytes (LF line ends, as delivered), named in qtoaster's delivery form
``<sec>.M<usec>P<pid>Q<n>.<host>,S=<size>``. Each file is written once, into qtoaster's
Maildir, and hard-linked into Dovecot's (separate directories, so Dovecot's index files and
both servers' new/ -> cur/ renames never meet; the shared inodes share the page cache).

Loads, each server started fresh and warmed up first (one full pass over every mailbox, so
qtoaster's size cache and Dovecot's index exist and the files are in the page cache):
1. one client: login, LIST, RETR every message (pipelined, WINDOW in flight), QUIT;
2. M clients on M mailboxes at once (threads), the same steps; total wall time;
3. logins: USER/PASS/QUIT, L in a row, then L spread over M parallel clients, on users
   with empty Maildirs (so the figure is the password check plus session set-up).
Every RETR's byte count (dot-unstuffed, terminator excluded) must equal LIST's size, and
every message must be retrieved: a mismatch aborts the run.

Passwords: qtoaster hashes argon2id (m=19456 KiB, t=2, p=1); Dovecot gets the very same
PHC strings as ``{ARGON2ID}`` (libsodium verifies them), so both pay the same per login.
Plain POP3 on both: qtoaster's ``[auth] allow_plaintext = true``, Dovecot's
``disable_plaintext_auth = no``. Server CPU time (utime+stime of the process tree, reaped
children included) is read from /proc around each run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

from dovecot import DovecotServer, install, version, wait_for_pop3
from idle_memory import tree_cpu
from qtoaster_side import QtoasterServer, override_toml

DOMAIN = "bench.test"
SIZE = 10240
WINDOW = 32  # RETRs in flight per client (RFC 2449 PIPELINING; both servers announce it)
IO_TIMEOUT = 60.0


def box_users(n: int) -> list[str]:
    return [f"box{i:02d}@{DOMAIN}" for i in range(n)]


def login_users(n: int) -> list[str]:
    return [f"login{i:02d}@{DOMAIN}" for i in range(n)]


def password(address: str) -> str:
    return "pw-" + address.partition("@")[0]


class Pop3Qtoaster(QtoasterServer):
    """A qtoaster home with a POP3 listener and the benchmark's users (passwords)."""

    def configure_users(self, users: list[str]) -> None:
        if self.home.exists():
            shutil.rmtree(self.home)
        q, h = str(self.qtoaster), str(self.home)
        pop3 = f"127.0.0.1:{self.port}"
        subprocess.run(
            [q, "init", "--home", h, "--me", DOMAIN, "--pop3", pop3, "--smtp", "127.0.0.1:0"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        toml = self.home / "qtoaster.toml"
        # 20 clients log in at once from 127.0.0.1: above the auth role's default cap of 4
        # logins in flight per address (Dovecot has none), which is a setting.
        auth = {"allow_plaintext": "true", "max_in_flight": "64"}
        toml.write_text(override_toml(toml.read_text(), {"auth": auth}))
        subprocess.run(
            [q, "domain", "add", DOMAIN, "--home", h], check=True, stdout=subprocess.DEVNULL
        )
        listing = self.workdir / "users.txt"
        listing.write_text("".join(f"{u}:{password(u)}\n" for u in users))
        subprocess.run([q, "user", "add", "--from-file", str(listing), "--home", h], check=True)

    def hashes(self) -> dict[str, str]:
        """address -> the argon2id PHC string qtoaster stored (in the credential store since
        issue 13; in the directory's users table before)."""
        store = self.home / "credentials" / "credentials.sqlite3"
        if store.exists():
            with sqlite3.connect(store) as db:
                pairs = db.execute("SELECT address, password_hash FROM credentials").fetchall()
            return {address: phc for address, phc in pairs if phc}
        with sqlite3.connect(self.home / "users.sqlite3") as db:
            rows = db.execute("SELECT local_part, password_hash FROM users").fetchall()
        return {f"{local}@{DOMAIN}": phc for local, phc in rows if phc}

    def maildir(self, address: str) -> Path:
        return self.home / "domains" / DOMAIN / address.partition("@")[0] / "Maildir"

    def run_command(self) -> list[str]:
        return [str(self.qtoaster), "run", "--home", str(self.home)]


def message(box: str, n: int) -> bytes:
    head = (
        f"Return-Path: <sender@client.test>\nDelivered-To: {box}\n"
        f"From: sender@client.test\nTo: {box}\nSubject: message {n}\n"
        f"Date: Tue, 25 Nov 2026 07:00:00 +0000\nMessage-Id: <{n}.{box}>\n\n"
        ".a body line that starts with a dot, stuffed on the wire\n"
    ).encode()
    line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxy\n"
    body = line * ((SIZE - len(head)) // len(line))
    tail = SIZE - len(head) - len(body)
    return head + body + b"x" * (tail - 1) + b"\n"


def fill(qt: Pop3Qtoaster, dc: DovecotServer, boxes: list[str], count: int) -> None:
    """Write ``count`` messages per box into qtoaster's Maildir, hard-link them into Dovecot's."""
    now = int(time.time()) - 86400
    serial = 0
    for box in boxes:
        qnew, dnew = qt.maildir(box) / "new", dc.maildir(box) / "new"
        for n in range(count):
            serial += 1
            name = f"{now + n}.M{serial % 1000000}P{os.getpid()}Q{serial}.bench,S={SIZE}"
            data = message(box, n)
            assert len(data) == SIZE
            (qnew / name).write_bytes(data)
            os.utime(qnew / name, (now + n, now + n))  # delivery order = mtime order
            os.link(qnew / name, dnew / name)
    dc.fix_ownership()


class Client:
    """A raw-socket POP3 client: a byte buffer, CRLF lines, dot-terminated blocks."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
        self.buf = bytearray()
        self.pos = 0
        self.ok(self.line())

    def _compact(self) -> None:
        # Only between replies: block() keeps offsets into the buffer while it fills.
        if self.pos > 1 << 20:
            del self.buf[: self.pos]
            self.pos = 0

    def _fill(self) -> None:
        data = self.sock.recv(1 << 18)
        if not data:
            raise ConnectionError("server closed the connection")
        self.buf += data

    def line(self) -> bytes:
        self._compact()
        while (end := self.buf.find(b"\r\n", self.pos)) < 0:
            self._fill()
        text = bytes(self.buf[self.pos : end])
        self.pos = end + 2
        return text

    def block(self) -> bytes:
        """A multi-line body up to its ".\\r\\n" (RFC 1939 section 3), still dot-stuffed."""
        start = self.pos
        scan = start
        while True:
            if self.buf.startswith(b".\r\n", start):
                self.pos = start + 3
                return b""
            end = self.buf.find(b"\r\n.\r\n", scan)
            if end >= 0:
                self.pos = end + 5
                return bytes(self.buf[start : end + 2])
            scan = max(start, len(self.buf) - 4)
            self._fill()

    @staticmethod
    def ok(reply: bytes) -> bytes:
        if not reply.startswith(b"+OK"):
            raise RuntimeError(f"POP3 error: {reply[:200]!r}")
        return reply

    def command(self, text: str) -> bytes:
        self.sock.sendall(text.encode() + b"\r\n")
        return self.ok(self.line())

    def login(self, user: str) -> None:
        self.command(f"USER {user}")
        self.command(f"PASS {password(user)}")

    def close(self) -> None:
        self.command("QUIT")
        self.sock.close()


def unstuffed_size(block: bytes) -> int:
    return len(block) - block.count(b"\r\n..") - (1 if block.startswith(b"..") else 0)


def fetch_all(port: int, user: str, expect: int) -> int:
    """Login, LIST, RETR everything (pipelined), QUIT; returns the bytes retrieved."""
    client = Client(port)
    client.login(user)
    client.command("LIST")
    sizes = [int(line.split()[1]) for line in client.block().splitlines()]
    if len(sizes) != expect:
        raise RuntimeError(f"{user}: LIST shows {len(sizes)} messages, expected {expect}")
    sent = 0
    total = 0
    for n, size in enumerate(sizes, start=1):
        while sent < min(n - 1 + WINDOW, len(sizes)):
            sent += 1
            client.sock.sendall(b"RETR %d\r\n" % sent)
        client.ok(client.line())
        got = unstuffed_size(client.block())
        if got != size:
            raise RuntimeError(f"{user}: RETR {n} gave {got} bytes, LIST said {size}")
        total += got
    client.close()
    return total


def login_once(port: int, user: str) -> None:
    client = Client(port)
    client.login(user)
    client.close()


def login_many(port: int, users: list[str]) -> None:
    for user in users:
        login_once(port, user)


def parallel(jobs: list[Callable[[], object]]) -> float:
    """Run the jobs on one thread each, started together; wall time; re-raise any error."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(jobs) + 1)

    def run(job: Callable[[], object]) -> None:
        barrier.wait()
        try:
            job()
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return elapsed


@dataclass
class Run:
    server: str
    load: str
    seconds: float
    count: int  # messages retrieved, or logins
    cpu: float  # server CPU seconds

    @property
    def rate(self) -> float:
        return self.count / self.seconds


def measure(server: str, load: str, root: int, count: int, work: Callable[[], float]) -> Run:
    cpu = tree_cpu(root)
    seconds = work()
    run = Run(server, load, seconds, count, tree_cpu(root) - cpu)
    print(
        f"  {server:8} {load:12} {seconds:7.3f} s  {run.rate:9.1f}/s  server cpu {run.cpu:6.2f} s",
        flush=True,
    )
    return run


def timed(job: Callable[[], object]) -> float:
    started = time.perf_counter()
    job()
    return time.perf_counter() - started


def suite(
    name: str, port: int, root: int, boxes: list[str], logins: list[str], args: argparse.Namespace
) -> list[Run]:
    count, n = args.messages, len(boxes)
    all_boxes: list[Callable[[], object]] = [partial(fetch_all, port, b, count) for b in boxes]
    print(f"{name}: warm-up", flush=True)
    parallel(all_boxes)
    login_many(port, logins)
    runs: list[Run] = []
    for _ in range(args.repeat):
        runs.append(measure(name, "1 client", root, count, partial(timed, all_boxes[0])))
    for _ in range(args.repeat):
        runs.append(measure(name, f"{n} clients", root, count * n, partial(parallel, all_boxes)))
    seq = [logins[i % len(logins)] for i in range(args.logins)]
    each = args.logins // len(logins)
    spread: list[Callable[[], object]] = [
        partial(login_many, port, [user] * each) for user in logins
    ]
    for _ in range(args.repeat):
        login_seq = partial(timed, partial(login_many, port, seq))
        runs.append(measure(name, "logins seq", root, len(seq), login_seq))
    for _ in range(args.repeat):
        label = f"logins x{len(logins)}"
        runs.append(measure(name, label, root, each * len(logins), partial(parallel, spread)))
    return runs


def table(runs: list[Run]) -> str:
    loads = list(dict.fromkeys(r.load for r in runs))
    out = [
        "| load | Dovecot s | Dovecot /s | qtoaster s | qtoaster /s | ratio | CPU s D / q |",
        "|---|---|---|---|---|---|---|",
    ]
    for load in loads:
        cells: dict[str, tuple[float, float, float]] = {}
        for server in ("dovecot", "qtoaster"):
            mine = [r for r in runs if r.server == server and r.load == load]
            if mine:
                cells[server] = (
                    statistics.median(r.seconds for r in mine),
                    statistics.median(r.rate for r in mine),
                    statistics.median(r.cpu for r in mine),
                )
        d, q = cells.get("dovecot"), cells.get("qtoaster")
        ratio = f"{q[1] / d[1]:.2f}" if d and q else "-"
        unit = "logins" if load.startswith("logins") else "msg"
        out.append(f"| {load} | {d[0]:.3f} | {d[1]:.1f} {unit} | " if d else f"| {load} | - | - | ")
        out[-1] += f"{q[0]:.3f} | {q[1]:.1f} {unit} | " if q else "- | - | "
        out[-1] += f"{ratio} | {d[2] if d else 0:.2f} / {q[2] if q else 0:.2f} |"
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 messages, 1 repeat, 60 logins")
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/qtoaster-bench-pop3"))
    parser.add_argument("--only", choices=["dovecot", "qtoaster"])
    parser.add_argument("--mailboxes", type=int, default=20)
    parser.add_argument("--messages", type=int)
    parser.add_argument("--logins", type=int)
    parser.add_argument("--repeat", type=int)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", action="store_true", help="leave the workdir in place")
    args = parser.parse_args(argv)
    args.messages = args.messages or (200 if args.quick else 1000)
    args.logins = args.logins or (60 if args.quick else 200)
    args.repeat = args.repeat or (1 if args.quick else 3)
    install()
    if args.workdir.exists():
        shutil.rmtree(args.workdir)
    args.workdir.mkdir(parents=True)
    boxes, logins = box_users(args.mailboxes), login_users(args.mailboxes)
    qt = Pop3Qtoaster(args.workdir, port=10111)
    dc = DovecotServer(args.workdir, port=10110)
    started = time.perf_counter()
    qt.configure_users(boxes + logins)
    dc.configure({a: "{ARGON2ID}" + phc for a, phc in qt.hashes().items()})
    fill(qt, dc, boxes, args.messages)
    print(f"setup: {time.perf_counter() - started:.1f} s; {version()}", flush=True)
    runs: list[Run] = []
    if args.only != "qtoaster":
        try:
            dc.start()
            runs += suite("dovecot", dc.port, dc.master_pid(), boxes, logins, args)
        finally:
            dc.stop()
    if args.only != "dovecot":
        try:
            qt.start()
            wait_for_pop3(qt.port, 30.0)
            runs += suite("qtoaster", qt.port, qt.master_pid(), boxes, logins, args)
        finally:
            qt.stop()
    print()
    print(table(runs))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in runs], indent=1))
    if not args.keep:
        shutil.rmtree(args.workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
