"""Relay benchmark (issue 6): qtoaster and Postfix relaying 1 KB messages to one smtp-sink.

Both servers take mail from smtp-source for ``user@relay.test`` (not one of their domains;
127.0.0.1 may relay on both) and pass it on to the same ``/usr/sbin/smtp-sink`` on
127.0.0.1:SINKPORT: Postfix through ``relayhost = [127.0.0.1]:SINKPORT`` (no MX lookup),
qtoaster through ``control/smtproutes`` ``:127.0.0.1:SINKPORT``.  Everything else stays at
each server's defaults (fsync on both, Postfix's connection cache and destination
concurrency 20, qtoaster's concurrencyremote 20 and connection cache).

One *run* is ``smtp-source -s S -m M -l 1024`` exactly as load.py drives it (a new TCP
connection per message).  The clock starts when smtp-source is launched and stops when the
sink has received M more messages than before the run.  The sink is counted through its
``-c`` counters: smtp-sink writes ``sess=N quit=N mesg=N`` plus CR to stdout whenever a
session ends, a QUIT arrives or a "." is received, and ``mesg`` is the running number of
messages.  A thread reads that pipe and wakes the waiter, so the count costs the sink one
small write per event and needs no files (``-d`` would write one per message) and no
polling.  Server CPU = utime+stime of the server's process tree (reaped children included),
read from /proc before and after each run.

Invariants: every loop is bounded in count and time (``--deadline`` per run, and a run
stops once smtp-source has exited and the sink saw nothing new for STALL_S); everything
listens and connects on 127.0.0.1 only; the sink and both servers are our children and are
stopped by their pids (``finally``), also when a run fails.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from idle_memory import tree_cpu
from postfix import SMTP_SOURCE, PostfixServer, install
from qtoaster_side import QtoasterServer

SMTP_SINK = Path("/usr/sbin/smtp-sink")
RECIPIENT = "user@relay.test"
SIZE = 1024
WARMUP = 50
STALL_S = 60.0  # smtp-source exited and the sink saw nothing new for this long: give up
STALL_FAILED_S = 3.0  # the same when smtp-source failed (it stops at its first error)
SETTLE_S = 30.0  # at the end: how long to wait for the sink to see every injected message
_MSG = re.compile(rb"mesg=(\d+)")

Server = PostfixServer | QtoasterServer


@dataclass(frozen=True)
class Load:
    sessions: int
    messages: int


@dataclass
class Run:
    server: str
    sessions: int
    messages: int
    received: int  # by the sink during the run
    seconds: float  # smtp-source launched -> the sink has all M
    accept_seconds: float  # smtp-source launched -> smtp-source exited (last 250 after DATA)
    server_cpu: float  # seconds, the server's process tree
    sink_cpu: float
    timed_out: bool
    smtp_source_rc: int | None

    @property
    def rate(self) -> float:
        return self.received / self.seconds if self.seconds > 0 else 0.0


def loads(quick: bool) -> list[Load]:
    return [Load(20, 400 if quick else 2000), Load(1, 100 if quick else 500)]


def free_port() -> int:
    """A port the kernel just handed out on 127.0.0.1 (free now; smtp-sink binds it next)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Sink:
    """``smtp-sink -c -u nobody 127.0.0.1:PORT 1000``, its message counter read from stdout."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.count = 0
        self.changed = threading.Condition()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def start(self, deadline_s: float = 10.0) -> None:
        argv = [str(SMTP_SINK), "-c", "-u", "nobody", f"127.0.0.1:{self.port}", "1000"]
        self._process = subprocess.Popen(argv, stdout=subprocess.PIPE, start_new_session=True)
        assert self._process.stdout is not None
        threading.Thread(target=self._read, args=(self._process.stdout,), daemon=True).start()
        deadline = time.monotonic() + deadline_s
        while not _greets(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"smtp-sink did not start on 127.0.0.1:{self.port}")
            time.sleep(0.05)

    def _read(self, stream: IO[bytes]) -> None:
        tail = b""
        for chunk in iter(lambda: stream.read1(4096), b""):  # type: ignore[attr-defined]
            # Counters are CR-terminated records; a record may straddle two reads.
            tail = (tail + chunk)[-256:]
            found = _MSG.findall(tail.rpartition(b"\r")[0])
            if found:
                with self.changed:
                    self.count = int(found[-1])
                    self.changed.notify_all()

    def wait_for(self, target: int, timeout_s: float) -> int:
        """Block until the sink counted ``target`` messages or the timeout passed."""
        deadline = time.monotonic() + timeout_s
        with self.changed:
            while self.count < target and (left := deadline - time.monotonic()) > 0:
                self.changed.wait(left)
            return self.count

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)  # our child, by its pid
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _greets(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            if sock.recv(512).startswith(b"220"):
                sock.sendall(b"QUIT\r\n")
                return True
    except OSError:
        pass
    return False


def run_load(server: Server, sink: Sink, load: Load, deadline_s: float) -> Run:
    argv = [str(SMTP_SOURCE), "-s", str(load.sessions), "-m", str(load.messages)]
    argv += ["-l", str(SIZE), "-f", "bench@client.test", "-t", RECIPIENT]
    argv += ["-M", "client.test", f"127.0.0.1:{server.port}"]
    root = server.master_pid()
    base = sink.count
    target = base + load.messages
    cpu, sink_cpu = tree_cpu(root), tree_cpu(sink.pid)
    start = time.monotonic()
    deadline = start + deadline_s
    source = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    exited: list[float] = []

    def watch() -> None:  # wake the waiter when smtp-source ends, for "accepted in"
        source.wait()
        exited.append(time.monotonic())
        with sink.changed:
            sink.changed.notify_all()

    threading.Thread(target=watch, daemon=True).start()
    progress = (base, start)
    with sink.changed:
        while sink.count < target:
            now = time.monotonic()
            if sink.count > progress[0]:
                progress = (sink.count, now)
            rc = source.poll()
            stall = STALL_FAILED_S if rc else STALL_S
            if now > deadline or (rc is not None and now - progress[1] > stall):
                break
            sink.changed.wait(min(1.0, max(0.001, deadline - now)))
        received = sink.count - base
    finished = time.monotonic()
    server_cpu, sink_cpu = tree_cpu(root) - cpu, tree_cpu(sink.pid) - sink_cpu
    if source.poll() is None:
        source.kill()  # our own child, by its pid
    rc = source.wait()
    return Run(
        server=server.name,
        sessions=load.sessions,
        messages=load.messages,
        received=min(received, load.messages),
        seconds=finished - start,
        accept_seconds=(exited[0] if exited else finished) - start,
        server_cpu=server_cpu,
        sink_cpu=sink_cpu,
        timed_out=received < load.messages,
        smtp_source_rc=rc,
    )


def show(run: Run) -> None:
    flag = " INCOMPLETE" if run.timed_out else ""
    print(
        f"  {run.server:8} s={run.sessions:<3} {run.received}/{run.messages} in"
        f" {run.seconds:.2f}s = {run.rate:.1f} msg/s (accepted in {run.accept_seconds:.2f}s,"
        f" smtp-source rc={run.smtp_source_rc}) server cpu {run.server_cpu:.2f}s"
        f" sink cpu {run.sink_cpu:.2f}s{flag}",
        flush=True,
    )


def make_servers(args: argparse.Namespace, sink_port: int) -> list[Server]:
    servers: list[Server] = []
    if args.only != "qtoaster":
        relayhost = f"[127.0.0.1]:{sink_port}"
        servers.append(PostfixServer(args.workdir, port=args.postfix_port, relayhost=relayhost))
    if args.only != "postfix":
        routes = {"smtproutes": f":127.0.0.1:{sink_port}\n"}
        servers.append(QtoasterServer(args.workdir, port=args.qtoaster_port, control_files=routes))
    return servers


def benchmark(args: argparse.Namespace, sink: Sink, servers: list[Server]) -> list[Run]:
    """Warm each server up, then alternate the servers run by run (a slow spell of the
    shared machine then hits both), ``repeat`` runs per load and server."""
    for server in servers:
        server.configure()
        server.start()
        print(f"{server.name}: 127.0.0.1:{server.port} -> sink 127.0.0.1:{sink.port}", flush=True)
    injected = 0
    for server in servers:
        warm = run_load(server, sink, Load(5, WARMUP), args.deadline)
        injected += WARMUP
        print(f"  {server.name:8} warm-up {warm.received}/{WARMUP} in {warm.seconds:.2f}s")
    runs: list[Run] = []
    for load in loads(args.quick):
        for _ in range(args.repeat):
            for server in servers:
                runs.append(run_load(server, sink, load, args.deadline))
                injected += load.messages
                show(runs[-1])
    # Every accepted message must reach the sink exactly once; retries after a short run
    # would otherwise go unseen.
    seen = sink.wait_for(injected, SETTLE_S)
    note = "" if seen == injected else "  <-- MISMATCH (lost, late or duplicated)"
    print(f"sink: {seen} messages received, {injected} injected{note}", flush=True)
    return runs


def table(runs: list[Run]) -> str:
    lines = [
        "| load | Postfix msg/s | qtoaster msg/s | ratio | srv CPU s P / Q | CPU ms/msg P / Q |",
        "|---|---|---|---|---|---|",
    ]
    for load in dict.fromkeys(Load(r.sessions, r.messages) for r in runs):

        def med(name: str, attr: str, load: Load = load) -> float | None:
            mine = [
                getattr(r, attr) for r in runs if r.server == name and r.sessions == load.sessions
            ]
            return statistics.median(mine) if mine else None

        p, q = med("postfix", "rate"), med("qtoaster", "rate")
        pc, qc = med("postfix", "server_cpu"), med("qtoaster", "server_cpu")
        late = any(r.timed_out for r in runs if r.sessions == load.sessions)
        ratio = f"{q / p:.2f}" if p and q else "-"
        lines.append(
            f"| {SIZE // 1024} KB x {load.sessions} ({load.messages}) | {_f(p)} | {_f(q)} | "
            f"{ratio}{'*' if late else ''} | {_f(pc, 2)} / {_f(qc, 2)} | "
            f"{_per(pc, load.messages)} / {_per(qc, load.messages)} |"
        )
    lines.append("medians of the repeats; ratio = qtoaster / Postfix; * = a run ended short")
    return "\n".join(lines)


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _per(cpu: float | None, messages: int) -> str:
    return "-" if cpu is None else f"{1000 * cpu / messages:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="400 / 100 messages, 1 repeat")
    parser.add_argument("--only", choices=["postfix", "qtoaster"], help="one server only")
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/qtoaster-bench-relay"))
    parser.add_argument("--postfix-port", type=int, default=10030)
    parser.add_argument("--qtoaster-port", type=int, default=10031)
    parser.add_argument("--sink-port", type=int, help="default: a free port")
    parser.add_argument("--deadline", type=float, default=300.0, help="seconds per run")
    parser.add_argument("--repeat", type=int, help="runs per load and server (3; --quick 1)")
    parser.add_argument("--json", type=Path, help="also write every run here")
    parser.add_argument("--keep", action="store_true", help="leave the workdir in place")
    args = parser.parse_args(argv)
    args.repeat = args.repeat or (1 if args.quick else 3)
    install()
    if not SMTP_SINK.exists():
        raise SystemExit(f"{SMTP_SINK} is missing (Debian's postfix package ships it)")
    if args.workdir.exists():
        shutil.rmtree(args.workdir)
    args.workdir.mkdir(parents=True)
    sink = Sink(args.sink_port or free_port())
    servers = make_servers(args, sink.port)
    runs: list[Run] = []
    try:
        sink.start()
        runs = benchmark(args, sink, servers)
    finally:
        for server in servers:
            server.stop()
        sink.stop()
    print()
    print(table(runs))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) | {"rate": r.rate} for r in runs], indent=1))
    if not args.keep:
        shutil.rmtree(args.workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
