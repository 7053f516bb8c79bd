"""Anti-spam benchmark: what qregex, mfcheck, tarpit, signatures and the scanners cost end to end.

Issue 7's bar: with qregex, mfcheck (cached DNS), tarpit (not triggered) and signatures all
on, the foundation's end-to-end figure (bench/load.py's ``run_load``) drops by no more
than 15%; with clamd and spamd on, report the figure and where the time goes.

Three qtoaster homes (``qtoaster_side.QtoasterServer``), started one at a time on
127.0.0.1:PORT, fresh for every repeat, interleaved so a slow spell hits all three:

1. ``baseline``: the home as bench/run makes it, no checks.
2. ``checks``: control/badhelo, badmailfrom, badmailto (the seed's examples plus ~20
   realistic lines each), control/mfcheck = 1 with ``[dns] nameservers`` pointing at a
   dnsmasq on loopback (tests/dnsserver.py) that serves client.test (MX + A, TTL 3600, so
   after the first lookup every sender is answered from the cache), tarpitcount = 50
   (never reached: one recipient per message), control/signatures with the seed's 11 lines.
3. ``scanners``: round 2 plus ``[clamd]`` (tests/clamdserver.py, its two EICAR signatures)
   and ``[spamd]`` (tests/spamdserver.py, Debian's shipped rules), both
   ``on_unavailable = "tempfail"`` so a scanner failure shows as a failed run instead of a
   fast unscanned one.

Before the loads of rounds 2 and 3 a few probes (smtplib) check that the checks really
fire (mfcheck 553, badmailto 553, signatures 552; EICAR 554, GTUBE 554), and after each
round-3 run the delivered mail must carry X-Spam-Status.  Loads: 1 KB x 20 sessions,
100 KB x 20, 1 KB x 1 (2,000 / 500 / 2,000 messages; --quick 400 / 100 / 400).  Per run
also the server CPU (utime+stime, reaped children included, from /proc) of qtoaster's
tree and, in round 3, of clamd's and spamd's trees.  Last, the latency of 100 direct calls
of ``clamd_scan`` and ``spamd_check`` on a 1 KB message.

Invariants: every loop and wait is bounded in count and time; everything listens and
connects on 127.0.0.1 only; dnsmasq, clamd and spamd are always stopped (finally), and
their processes are checked gone at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import smtplib
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from idle_memory import tree_cpu, tree_pids
from load import WARMUP, Load, Result, run_load
from postfix import SMTP_SOURCE
from qtoaster_side import REPO, QtoasterServer

sys.path.insert(0, str(REPO))  # the tests' real servers: tests/dnsserver.py, clamd, spamd
from tests.clamdserver import EICAR, ClamdServer
from tests.dnsserver import DnsServer, Zone
from tests.spamdserver import GTUBE, SpamdServer

ROUNDS = ("baseline", "checks", "scanners")
BAR = 0.85  # checks / baseline, per load
SPAM_REJECT = 10.0  # spamd reject_score: GTUBE scores 1000, smtp-source's mail ~1
LATENCY_CALLS = 100

SIGNATURES = "TVqQAAMAA TVpQAAIAA TVpAALQAc TVpyAXkAX TVrmAU4AA TVrhARwAk TVoFAQUAA TVoAAAQAA"
SIGNATURES += " TVoIARMAA TVouARsAA TVrQAT8AA"

SPAM_DOMAINS = [
    "bulkmail-offers", "cheap-pills", "casino-royale-win", "replica-watches", "loan-now",
    "crypto-doubler", "seo-rank-fast", "dating-singles", "mega-lottery", "work-from-home",
]  # fmt: skip

BADHELO = [
    r"!\.",  # the seed: HELO without a dot (or empty)
    r"^\[?[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+\]?$",  # a bare IP address
    r"^localhost(\.localdomain)?$",
    r"\.(local|lan|home|internal|localdomain)$",
    r"^(yahoo|hotmail|gmail|aol|outlook|msn)\.com$",  # forged freemail names
    r"^(mail|smtp)\.bench\.test$",  # our own name from outside
    r"(dsl|dialup|dynamic|dyn|ppp|pool|cable)[-.0-9]",
    r"[0-9]+-[0-9]+-[0-9]+-[0-9]+",
    r"^[^.]+\.(ru|cn|top|xyz|click)$",
    r"^user$", r"^friend$", r"^ylmf-pc$", r"^win-[a-z0-9]+$", r"^desktop-[a-z0-9]+$",
    r"_", r"\.\.", r"^-", r"-$", r"^adsl", r"\.invalid$", r"^unknown$", r"^ehlo$",
]  # fmt: skip

BADMAILFROM = [
    r".*spam.*",  # the seed
    r"!@",  # the seed: unqualified senders
    *[rf"@(.*\.)?{d}\.(com|net|biz|info)$" for d in SPAM_DOMAINS],
    r"^(root|daemon|bin|nobody|www-data)@",
    r"@[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$",
    r"@.*\.(top|xyz|click|loan|work|zip)$",
    r"^[a-z]{20,}@",
    r"^[0-9]{8,}@",
    r"@(mail|smtp)\.bench\.test$",
    r"^newsletter-[0-9]+@",
    r"@localhost$",
    r"^mailer-daemon@.*\.ru$",
    r"@(.*\.)?example\.invalid$",
    r"^(noreply|no-reply)@.*\.cn$",
]  # fmt: skip

BADMAILTO = [
    r"[!%#:*^(){}]",  # the seed: source routes and odd characters
    r"@.*@",  # the seed
    *[rf"@(.*\.)?{d}\.(com|net)$" for d in SPAM_DOMAINS],
    r"^(root|daemon|bin|nobody|www-data)@",
    r"^[^@]*@localhost$",
    r"^(webmaster|info|sales)@oldbrand\.bench\.test$",
    r"^former-employee[0-9]*@bench\.test$",
    r"^honeypot@",
    r"^spamtrap[0-9]*@",
    r"@\[",
    r"^\.",
    r"\.@",
    r"^[0-9]+@bench\.test$",
]  # fmt: skip


def control_files() -> dict[str, str]:
    def lines(comment: str, patterns: list[str]) -> str:
        return f"# {comment}\n" + "\n".join(patterns) + "\n"

    return {
        "badhelo": lines("bench: the seed's example plus common HELO blocks", BADHELO),
        "badmailfrom": lines("bench: the seed's examples plus domain blocks", BADMAILFROM),
        "badmailto": lines("bench: the seed's examples plus retired addresses", BADMAILTO),
        "mfcheck": "1\n",
        "tarpitcount": "50\n",
        "tarpitdelay": "5\n",
        "signatures": "\n".join(SIGNATURES.split()) + "\n",
    }


def zone() -> Zone:
    """client.test (smtp-source's -f bench@client.test) has an MX and an A; the rest of
    .test is NXDOMAIN.  TTL 3600: mfcheck's cache answers every later sender."""
    return Zone(
        domains=("test",),
        mx=[("client.test", 10, "mx.client.test")],
        hosts=[("client.test", "127.0.0.1"), ("mx.client.test", "127.0.0.1")],
        ttl=3600,
    )


# -- CPU --------------------------------------------------------------------------------


def daemon_pid(server: DnsServer | ClamdServer | SpamdServer | None) -> int | None:
    """The daemon's root pid (the helpers keep their Popen private; read-only use)."""
    process = getattr(server, "_process", None)
    return process.pid if process is not None else None


@dataclass
class Run:
    round: str
    result: Result
    cpu: dict[str, float] = field(default_factory=dict)  # "qtoaster"/"clamd"/"spamd" -> s

    def ms_per_message(self, who: str) -> float:
        n = self.result.delivered
        return 1000.0 * self.cpu.get(who, 0.0) / n if n else 0.0


# -- probes -----------------------------------------------------------------------------


def _exe_message() -> str:
    return (
        "From: bench@client.test\r\nTo: user@bench.test\r\nSubject: probe\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        "--b1\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
        "--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
        "\r\nTVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n"
        "--b1--\r\n"
    )


def _plain(body: str) -> str:
    return f"From: bench@client.test\r\nTo: user@bench.test\r\nSubject: probe\r\n\r\n{body}\r\n"


def probe(port: int, scanners: bool) -> list[str]:
    """Each check fires once; returns the failures (empty: all as expected)."""
    failures: list[str] = []

    def expect(what: str, want: int, got: int) -> None:
        if got != want:
            failures.append(f"{what}: expected {want}, got {got}")

    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=30) as smtp:
        expect("mfcheck", 553, smtp.mail("x@nonexistent.test")[0])
        smtp.rset()
        smtp.mail("bench@client.test")
        expect("badmailto", 553, smtp.rcpt("user%x@bench.test")[0])
        smtp.rset()
        cases = [("signatures", 552, _exe_message())]
        if scanners:
            cases += [
                ("clamd EICAR", 554, _plain(EICAR.decode())),
                ("spamd GTUBE", 554, _plain(GTUBE)),
            ]
        for what, want, message in cases:
            smtp.mail("bench@client.test")
            smtp.rcpt("user@bench.test")
            expect(what, want, smtp.data(message)[0])  # the reply after the final dot
            smtp.rset()
    return failures


def spam_headers(maildir_new: Path) -> bool:
    """Every delivered message carries X-Spam-Status (spamd was really asked)."""
    with os.scandir(maildir_new) as entries:
        paths = [e.path for e in entries]
    for path in paths[:: max(1, len(paths) // 20)]:  # a sample of about 20
        with open(path, "rb") as f:
            if b"\nX-Spam-Status: " not in b"\n" + f.read(8192):
                return False
    return bool(paths)


# -- direct scanner latency -------------------------------------------------------------


@dataclass
class Latency:
    scanner: str
    calls: int
    median_ms: float
    p95_ms: float
    cpu_ms: float  # the daemon's CPU per call
    client_cpu_ms: float  # this process's CPU per call: the client side, as in qtoaster


def one_kb_message(directory: Path) -> Path:
    head = (
        "From: bench@client.test\nTo: user@bench.test\nSubject: latency\n"
        "Date: Wed, 25 Nov 2026 10:00:00 +0000\nMessage-Id: <latency@client.test>\n\n"
    )
    body = "La de da de da 1.\n" * ((1024 - len(head)) // 18 + 1)
    path = directory / "one-kb.eml"
    path.write_bytes((head + body)[:1024].encode())
    return path


def latency(scanner: str, call: Callable[[], Awaitable[object]], root: int | None) -> Latency:
    async def run() -> list[float]:
        times = []
        for _ in range(LATENCY_CALLS):
            began = time.perf_counter()
            await asyncio.wait_for(call(), timeout=30)
            times.append(time.perf_counter() - began)
        return times

    cpu, client = tree_cpu(root), time.process_time()
    times = sorted(asyncio.run(run()))
    cpu, client = tree_cpu(root) - cpu, time.process_time() - client
    return Latency(
        scanner,
        len(times),
        1000 * statistics.median(times),
        1000 * times[int(0.95 * (len(times) - 1))],
        1000 * cpu / len(times),
        1000 * client / len(times),
    )


def scanner_latencies(clamd: ClamdServer, spamd: SpamdServer, workdir: Path) -> list[Latency]:
    from qtoaster.scanners.clamd import clamd_scan
    from qtoaster.scanners.spamd import spamd_check

    path = str(one_kb_message(workdir))
    return [
        latency(
            "clamd",
            lambda: clamd_scan(clamd.address, path, 0, timeout=30),
            daemon_pid(clamd),
        ),
        latency(
            "spamd",
            lambda: spamd_check(spamd.address, path, 0, timeout=30),
            daemon_pid(spamd),
        ),
    ]


# -- the suite --------------------------------------------------------------------------


def plan(quick: bool, small: int | None = None, large: int | None = None) -> list[Load]:
    small = small or (400 if quick else 2000)
    large = large or (100 if quick else 500)
    return [Load(1024, 20, small), Load(102400, 20, large), Load(1024, 1, small)]


def homes(workdir: Path, port: int, dns: str, clamd: str, spamd: str) -> dict[str, QtoasterServer]:
    checks = {"dns": {"nameservers": f'["{dns}"]'}}
    scanner = {"enabled": "true", "timeout": "30", "on_unavailable": '"tempfail"'}
    scanners = {
        **checks,
        "clamd": {"address": f'"{clamd}"', **scanner},
        "spamd": {"address": f'"{spamd}"', "reject_score": str(SPAM_REJECT), **scanner},
    }

    def home(
        name: str, settings: dict[str, dict[str, str]], files: dict[str, str]
    ) -> QtoasterServer:
        return QtoasterServer(
            workdir / name, port=port, name=name, settings=settings, control_files=files
        )

    return {
        "baseline": home("baseline", {}, {}),
        "checks": home("checks", checks, control_files()),
        "scanners": home("scanners", scanners, control_files()),
    }


def run_round(
    server: QtoasterServer,
    loads: list[Load],
    deadline_s: float,
    daemons: dict[str, int | None],
) -> list[Run]:
    """One fresh start: probes, warm-up, each load once with the CPU of every tree."""
    server.start()
    try:
        if server.name != "baseline":
            failures = probe(server.port, server.name == "scanners")
            print(f"  {server.name} probes: {'; '.join(failures) or 'all as expected'}", flush=True)
        run_load(server, Load(1024, 5, WARMUP), deadline_s)
        roots = {"qtoaster": server.master_pid(), **daemons}
        runs = []
        for load in loads:
            before = {who: tree_cpu(pid) for who, pid in roots.items()}
            result = run_load(server, load, deadline_s)
            run = Run(server.name, result, {w: tree_cpu(p) - before[w] for w, p in roots.items()})
            headers = ""
            if server.name == "scanners":
                headers = " X-Spam-Status ok" if spam_headers(server.maildir_new) else " NO X-Spam"
            cpu = " ".join(f"{w} {run.ms_per_message(w):.2f}" for w in roots)
            print(
                f"  {server.name:8} {load.size // 1024:>4} KB s={load.sessions:<3}"
                f" {result.delivered}/{load.messages} in {result.seconds:.2f}s"
                f" = {result.rate:.1f} msg/s (rc={result.smtp_source_rc});"
                f" cpu ms/msg {cpu}{headers}{' INCOMPLETE' if result.timed_out else ''}",
                flush=True,
            )
            runs.append(run)
        return runs
    finally:
        server.stop()


def report(loads: list[Load], runs: list[Run]) -> str:
    def median(name: str, load: Load, value: Callable[[Run], float]) -> float:
        chosen = [value(r) for r in runs if r.round == name and _is(r.result, load)]
        return statistics.median(chosen) if chosen else 0.0

    def late(name: str, load: Load) -> str:
        short = [r for r in runs if r.round == name and _is(r.result, load) and r.result.timed_out]
        return "*" if short else ""

    head = f"{'load':<12}{'baseline':>10}{'checks':>10}{'ratio':>7}{'scanners':>10}{'ratio':>7}"
    lines = [head + "   server CPU ms/msg: qtoaster base/checks/scan, clamd, spamd"]
    for load in loads:
        rate = {n: median(n, load, lambda r: r.result.rate) for n in ROUNDS}
        q = [median(n, load, lambda r: r.ms_per_message("qtoaster")) for n in ROUNDS]
        clamd = median("scanners", load, lambda r: r.ms_per_message("clamd"))
        spamd = median("scanners", load, lambda r: r.ms_per_message("spamd"))
        base = rate["baseline"] or float("nan")
        mark = "" if rate["checks"] / base >= BAR else "!"
        cells = [f"{rate[n]:.1f}{late(n, load)}" for n in ROUNDS]
        lines.append(
            f"{f'{load.size // 1024} KB x {load.sessions}':<12}{cells[0]:>10}{cells[1]:>10}"
            f"{rate['checks'] / base:>6.2f}{mark:1}{cells[2]:>10}{rate['scanners'] / base:>7.3f}"
            f"   {q[0]:.2f}/{q[1]:.2f}/{q[2]:.2f}, {clamd:.2f}, {spamd:.2f}"
        )
    lines.append(f"msg/s medians; bar checks/baseline >= {BAR} (! = below); * = a run ended short")
    return "\n".join(lines)


def _is(result: Result, load: Load) -> bool:
    return (result.size, result.sessions) == (load.size, load.sessions)


def leftovers(pids: list[int]) -> list[int]:
    """Which of the daemons' pids still run (zombies waiting for init do not count)."""
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="400/100 messages, 1 repeat")
    parser.add_argument("--repeat", type=int, help="starts per round (3; --quick 1)")
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/qtoaster-bench-antispam"))
    parser.add_argument("--port", type=int, default=10032)
    parser.add_argument("--deadline", type=float, default=600.0, help="seconds per run")
    parser.add_argument("--small", type=int, help="messages per 1 KB run (2,000; --quick 400)")
    parser.add_argument("--large", type=int, help="messages per 100 KB run (500; --quick 100)")
    parser.add_argument("--spamd-children", type=int, default=2, help="spamd --max-children")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--no-scanners", action="store_true", help="rounds 1 and 2 only (the bar; minutes)"
    )
    args = parser.parse_args(argv)
    if not SMTP_SOURCE.exists():
        print(f"{SMTP_SOURCE} missing: run bench/run once (it installs postfix)", file=sys.stderr)
        return 1
    loads, repeat = (
        plan(args.quick, args.small, args.large),
        args.repeat or (1 if args.quick else 3),
    )
    runs: list[Run] = []
    latencies: list[Latency] = []
    dns = DnsServer(zone())
    clamd = ClamdServer(unix=False)
    spamd = SpamdServer(children=args.spamd_children)
    daemon_pids: list[int] = []
    try:
        dns_address = dns.start()
        clamd.start()
        spamd.start()
        daemon_pids = [p for p in (daemon_pid(dns), daemon_pid(clamd), daemon_pid(spamd)) if p]
        daemon_pids += [p for root in daemon_pids for p in tree_pids(root)]
        print(
            f"dnsmasq {dns_address}, clamd {clamd.address} (up in {clamd.started_in:.1f}s),"
            f" spamd {spamd.address} (up in {spamd.started_in:.1f}s)",
            flush=True,
        )
        args.workdir.mkdir(parents=True, exist_ok=True)
        servers = homes(args.workdir, args.port, dns_address, clamd.address, spamd.address)
        for server in servers.values():
            server.workdir.mkdir(parents=True, exist_ok=True)
            server.configure()
        for n in range(repeat):
            print(f"repeat {n + 1}/{repeat}", flush=True)
            for name, server in servers.items():
                if name == "scanners" and args.no_scanners:
                    continue
                daemons = {}
                if name == "scanners":
                    daemons = {"clamd": daemon_pid(clamd), "spamd": daemon_pid(spamd)}
                runs += run_round(server, loads, args.deadline, daemons)
        if not args.no_scanners:
            with tempfile.TemporaryDirectory(dir=args.workdir) as scratch:
                latencies = scanner_latencies(clamd, spamd, Path(scratch))
    finally:
        spamd.stop()
        clamd.stop()
        dns.stop()
    print()
    print(report(loads, runs))
    for lat in latencies:
        print(
            f"{lat.scanner} direct, {lat.calls} calls on 1 KB: median {lat.median_ms:.2f} ms,"
            f" p95 {lat.p95_ms:.2f} ms, CPU ms/call: daemon {lat.cpu_ms:.2f},"
            f" client {lat.client_cpu_ms:.2f}"
        )
    alive = leftovers(daemon_pids)
    print(f"daemons left running: {alive or 'none'}")
    if args.json:
        payload = {
            "runs": [
                {"round": r.round, **asdict(r.result), "rate": r.result.rate, "cpu": r.cpu}
                for r in runs
            ],
            "latency": [asdict(lat) for lat in latencies],
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return 1 if alive else 0


if __name__ == "__main__":
    sys.exit(main())
