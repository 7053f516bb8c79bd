"""Drive smtp-source against a server and measure end-to-end delivery rate; the whole suite.

One *load* is ``smtp-source -s SESSIONS -m MESSAGES -l SIZE``: MESSAGES SMTP sessions in
total, at most SESSIONS of them open at once, each session EHLO/HELO, MAIL, one RCPT
(``user@bench.test``), DATA with SIZE bytes of body plus smtp-source's few header lines,
QUIT; a new TCP connection per message (smtp-source without ``-d``).

End to end: the clock starts just before smtp-source is launched and stops when the server's
Maildir ``new/`` holds MESSAGES files (polled every 5 ms), so a message counts only once it
was accepted *and* delivered. Every run has a deadline, and stops early once smtp-source
has exited and no file arrived for STALL_S (STALL_FAILED_S if it failed); a run that ends
short reports the rate of what arrived and is flagged. ``new/`` is emptied before each run.

Invariants: every loop is bounded in count and time; nothing listens or connects off loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from idle_memory import IdleMemory, measure
from postfix import SMTP_SOURCE, PostfixServer, install
from qtoaster_side import QtoasterServer

WARMUP = 50
POLL_S = 0.005
STALL_S = 60.0  # no new file for this long after smtp-source exited: stop waiting
STALL_FAILED_S = 3.0  # the same when smtp-source failed (it stops at the first error)


class Server(Protocol):
    name: str
    port: int

    @property
    def maildir_new(self) -> Path: ...


@dataclass(frozen=True)
class Load:
    size: int
    sessions: int
    messages: int


@dataclass
class Result:
    server: str
    size: int
    sessions: int
    messages: int
    delivered: int
    seconds: float  # first connection -> last file in new/
    accept_seconds: float  # first connection -> smtp-source exited (all 250s received)
    timed_out: bool
    smtp_source_rc: int | None

    @property
    def rate(self) -> float:
        return self.delivered / self.seconds if self.seconds > 0 else 0.0


def loads(quick: bool) -> list[Load]:
    small, large = (400, 100) if quick else (2000, 500)
    return [Load(1024, s, small) for s in (1, 20, 100)] + [
        Load(102400, s, large) for s in (1, 20, 100)
    ]


def count_files(directory: Path) -> int:
    with os.scandir(directory) as entries:
        return sum(1 for _ in entries)


def empty_dir(directory: Path) -> None:
    with os.scandir(directory) as entries:
        for entry in entries:
            os.unlink(entry.path)


def run_load(server: Server, load: Load, deadline_s: float) -> Result:
    new = server.maildir_new
    empty_dir(new)
    argv = [str(SMTP_SOURCE), "-s", str(load.sessions), "-m", str(load.messages)]
    argv += ["-l", str(load.size), "-f", "bench@client.test", "-t", "user@bench.test"]
    argv += ["-M", "client.test", f"127.0.0.1:{server.port}"]
    start = time.monotonic()
    deadline = start + deadline_s
    source = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    accepted_at: float | None = None
    delivered = 0
    progress_at = start
    while True:
        now = time.monotonic()
        if accepted_at is None and source.poll() is not None:
            accepted_at = now
        count = count_files(new)
        if count > delivered:
            delivered, progress_at = count, now
        if delivered >= load.messages or now > deadline or _stalled(source, progress_at, now):
            break
        time.sleep(POLL_S)
    finished = time.monotonic()
    if source.poll() is None:
        source.kill()  # our own child, by its pid
    rc = source.wait()
    return Result(
        server=server.name,
        size=load.size,
        sessions=load.sessions,
        messages=load.messages,
        delivered=delivered,
        seconds=finished - start,
        accept_seconds=(accepted_at or finished) - start,
        timed_out=delivered < load.messages,
        smtp_source_rc=rc,
    )


def _stalled(source: subprocess.Popen[bytes], progress_at: float, now: float) -> bool:
    """Give up early once smtp-source has exited and nothing more arrives: whatever was
    accepted is queued by then, so a long silence means delivery is stuck, not slow."""
    rc = source.poll()
    if rc is None:
        return False
    return now - progress_at > (STALL_FAILED_S if rc else STALL_S)


def run_suite(
    server: Server, plan: Sequence[Load], deadline_s: float, repeat: int
) -> Iterator[Result]:
    """Warm up (spawn the server's processes, open its files), then run each load ``repeat``
    times in a row."""
    run_load(server, Load(1024, 5, WARMUP), deadline_s)
    for load in plan:
        for _ in range(repeat):
            result = run_load(server, load, deadline_s)
            flag = " INCOMPLETE" if result.timed_out else ""
            print(
                f"  {server.name:8} {load.size // 1024:>4} KB  s={load.sessions:<3}"
                f" {result.delivered}/{load.messages} in {result.seconds:.2f}s"
                f" = {result.rate:.1f} msg/s (accepted in {result.accept_seconds:.2f}s,"
                f" smtp-source rc={result.smtp_source_rc}){flag}",
                flush=True,
            )
            yield result


def table(results: Sequence[Result], plan: Sequence[Load]) -> str:
    """One row per load; each cell is the median rate of the repeated runs."""
    runs: dict[tuple[str, int, int], list[Result]] = {}
    for r in results:
        runs.setdefault((r.server, r.size, r.sessions), []).append(r)

    def cell(server: str, load: Load) -> tuple[str, float | None]:
        repeats = runs.get((server, load.size, load.sessions))
        if not repeats:
            return "n/a", None
        rate = statistics.median(r.rate for r in repeats)
        late = any(r.timed_out for r in repeats)
        return f"{rate:.1f}{'*' if late else ''}", rate

    header = f"{'size':>6} {'sessions':>8} {'postfix msg/s':>14} {'qtoaster msg/s':>15}"
    lines = [f"{header} {'ratio':>6}"]
    for load in plan:
        pf_text, pf = cell("postfix", load)
        qt_text, qt = cell("qtoaster", load)
        ratio = f"{qt / pf:.2f}" if pf and qt is not None else "n/a"
        size = f"{load.size // 1024} KB"
        lines.append(f"{size:>6} {load.sessions:>8} {pf_text:>14} {qt_text:>15} {ratio:>6}")
    lines.append("msg/s = median of the repeated runs; * = a run ended before all were delivered")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="qtoaster vs Postfix, end-to-end msg/s")
    parser.add_argument("--quick", action="store_true", help="fewer messages per run")
    parser.add_argument("--only", choices=["postfix", "qtoaster"], help="one server only")
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/qtoaster-bench"))
    parser.add_argument("--deadline", type=float, default=300.0, help="seconds per run")
    parser.add_argument("--repeat", type=int, help="runs per load (default 3, --quick 1)")
    parser.add_argument("--no-idle", action="store_true", help="skip the idle-memory test")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    install()
    args.workdir.mkdir(parents=True, exist_ok=True)
    plan = loads(args.quick)
    repeat = args.repeat or (1 if args.quick else 3)
    servers: list[PostfixServer | QtoasterServer] = []
    if args.only != "qtoaster":
        servers.append(PostfixServer(args.workdir, port=10025))
    if args.only != "postfix":
        servers.append(QtoasterServer(args.workdir, port=10026))

    results: list[Result] = []
    idle: list[tuple[str, IdleMemory]] = []
    for server in servers:
        results_before = len(results)
        try:
            server.configure()
            server.start()
        except Exception as error:  # one server failing must not hide the other's figures
            print(f"{server.name}: could not start: {error}", file=sys.stderr)
            server.stop()
            continue
        try:
            print(f"{server.name}: 127.0.0.1:{server.port}", flush=True)
            results.extend(run_suite(server, plan, args.deadline, repeat))
            if not args.no_idle:
                # A fresh server, so the baseline holds no processes left over from the loads.
                server.stop()
                server.start()
                idle.extend((server.name, m) for m in idle_runs(server, args.quick))
        finally:
            server.stop()
        print(f"{server.name}: {len(results) - results_before} runs done", flush=True)

    print()
    print(table(results, plan))
    for name, memory in idle:
        print(f"idle {name:8} {memory.summary()}")
    if args.json:
        payload = {
            "throughput": [asdict(r) | {"rate": r.rate} for r in results],
            "idle": [{"server": name} | asdict(memory) for name, memory in idle],
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


def idle_runs(server: PostfixServer | QtoasterServer, quick: bool) -> list[IdleMemory]:
    # Postfix needs one smtpd process per connection: capped at 1,000 (see README).
    counts = [1000] if server.name == "postfix" or quick else [1000, 10000]
    return [
        measure("127.0.0.1", server.port, server.master_pid(), n, deadline_s=180.0) for n in counts
    ]


if __name__ == "__main__":
    sys.exit(main())
