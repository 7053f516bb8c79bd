"""Greylisting, rate limits and early-talker tests: what they cost end to end (issue 18's
bar: >= 0.95 of the same run without them, at 1 KB and 100 KB x 20 sessions).

Two homes on 127.0.0.1:PORT, started one at a time, fresh for every repeat, interleaved:

1. ``off``: tcp.smtp ``:allow`` (no RELAYCLIENT: the client is an ordinary port-25 client),
   greylisting and rate limits off.
2. ``on``: the same with ``[greylist] enabled`` (the client's /24 already auto-whitelisted
   in the shared state, as after five passed retries) and ``[ratelimit] enabled`` with
   every limit on but high enough never to refuse the load: per RCPT the greylist check
   answers from memory, the rate limits cost one state transaction each at CONNECT, MAIL
   and RCPT; and ``[pregreet] enabled`` with ``wait = 0`` (the early-talker tests watch
   every session; no greeting delay, which would only measure itself).

Besides msg/s, each run prints the smtpd workers' CPU per message (user + system, from
/proc): on a shared machine the rate swings with other work, the CPU a message costs much
less, so the difference on - off is the checks' cost.

Invariants: every wait is bounded (bench/load.py's deadline); loopback only.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import time
from pathlib import Path

from load import WARMUP, Load, run_load
from qtoaster_side import QtoasterServer

HIGH = "10000000"
TICK = os.sysconf("SC_CLK_TCK")


def smtpd_cpu(master: int) -> float:
    """Seconds of CPU (user + system) the master's smtpd children used so far."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == master and b"smtpd" in cmdline and b"serve" in cmdline:
            total += (int(fields[11]) + int(fields[12])) / TICK
    return total


class Home(QtoasterServer):
    def configure(self) -> None:
        super().configure()
        (self.home / "tcp.smtp").write_text(":allow\n")
        if self.name == "on":
            policy = self.home / "policy"
            policy.mkdir(exist_ok=True)
            with sqlite3.connect(policy / "state.sqlite3") as db:
                db.execute(
                    "CREATE TABLE qtoaster_greyclient (net TEXT PRIMARY KEY,"
                    " retries INTEGER NOT NULL, last_seen DOUBLE PRECISION NOT NULL)"
                )
                db.execute(
                    "INSERT INTO qtoaster_greyclient VALUES ('127.0.0.0/24', 5, ?)", (time.time(),)
                )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench-limits"))
    parser.add_argument("--qtoaster", type=Path, required=True)
    parser.add_argument("--port", type=int, default=10031)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--small", type=int, default=2000)
    parser.add_argument("--large", type=int, default=500)
    args = parser.parse_args()
    limits = {
        "enabled": "true",
        "connections_per_minute": HIGH,
        "messages_per_minute": HIGH,
        "recipients_per_hour": HIGH,
    }
    homes = {
        "off": Home(args.workdir / "off", port=args.port, name="off", qtoaster=args.qtoaster),
        "on": Home(
            args.workdir / "on",
            port=args.port,
            name="on",
            qtoaster=args.qtoaster,
            settings={
                "greylist": {"enabled": "true"},
                "ratelimit": limits,
                # 0 s: no greeting delay (a delay would measure itself, not the cost);
                # the pregreet and pipelining tests still watch every session.
                "pregreet": {"enabled": "true", "wait": "0"},
            },
        ),
    }
    loads = [Load(1024, 20, args.small), Load(100 * 1024, 20, args.large)]
    rates: dict[tuple[str, int], list[float]] = {}
    cpus: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.repeat):
        for name, server in homes.items():
            server.configure()
            server.start()
            try:
                run_load(server, Load(1024, 5, WARMUP), 120)
                for load in loads:
                    before = smtpd_cpu(server.master_pid())
                    result = run_load(server, load, 300)
                    cpu_ms = (smtpd_cpu(server.master_pid()) - before) * 1000 / load.messages
                    print(
                        f"  {name:4} {load.size // 1024:>4} KB x {load.sessions}:"
                        f" {result.delivered}/{load.messages} {result.rate:.1f} msg/s,"
                        f" smtpd {cpu_ms:.2f} ms CPU/msg",
                        flush=True,
                    )
                    rates.setdefault((name, load.size), []).append(result.rate)
                    cpus.setdefault((name, load.size), []).append(cpu_ms)
            finally:
                server.stop()
    for load in loads:
        off = statistics.median(rates[("off", load.size)])
        on = statistics.median(rates[("on", load.size)])
        cpu_off = statistics.median(cpus[("off", load.size)])
        cpu_on = statistics.median(cpus[("on", load.size)])
        print(
            f"{load.size // 1024:>4} KB x 20: off {off:.1f} on {on:.1f} msg/s ratio {on / off:.3f};"
            f" smtpd CPU/msg off {cpu_off:.2f} on {cpu_on:.2f} ms"
        )


if __name__ == "__main__":
    main()
