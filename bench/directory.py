"""Directory benchmark: what chkuser with 10,000 users costs end to end, on SQLite and PostgreSQL.

Three qtoaster homes, started one at a time on 127.0.0.1:PORT, interleaved per repeat:

- A: chkuser off, SQLite, only ``user@bench.test`` (the foundation's setup, bench/load.py);
- B: chkuser "domain", SQLite, ``user@bench.test`` + 10,000 users ``uNNNNN@bench.test``;
- C: chkuser "domain", PostgreSQL (a private server on 127.0.0.1), the same users.

All three set ``[chkuser] error_delay = error_delay_increase = 0``: the loads have no
refusals, and the RCPT test must time lookups, not the anti-harvest sleep.

Measured: (1) end-to-end msg/s of bench/load.py's ``run_load`` for 1 KB x 20 sessions,
100 KB x 20 and 1 KB x 1, ratios B/A and C/A (bars 0.90 and 0.80); (2) RCPT/s with a cold
cache: each server is started fresh, then 20 pipelined sessions send MAIL, 50 RCPTs to
users never asked before in that process (+5 unknown ones), RSET; (3) the time to add the
10,000 users, without and with passwords, on both databases (``qtoaster user add
--from-file`` when the CLI has it, else the Python API, timed in-process).

Invariants: every loop and wait is bounded in count and time; everything listens and
connects on 127.0.0.1 only; the PostgreSQL server is always stopped and removed (finally).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from load import WARMUP, Load, Result, run_load
from postfix import install
from qtoaster_side import QTOASTER, REPO, QtoasterServer

sys.path.insert(0, str(REPO / "tests"))  # the tests' throw-away PostgreSQL (tests/pgserver.py)
from pgserver import PgServer

DOMAIN = "bench.test"
USERS = 10_000
RCPT_SESSIONS = 20
RCPT_KNOWN, RCPT_UNKNOWN = 50, 5  # per transaction
NO_DELAY = {"error_delay": "0.0", "error_delay_increase": "0.0"}
BARS = {"B": 0.90, "C": 0.80}
# Durable PostgreSQL, as in production (tests/pgserver.py turns fsync off for speed).
PG_DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}


def user_address(i: int) -> str:
    return f"u{i:05d}@{DOMAIN}"


def plan(quick: bool) -> list[Load]:
    small, large = (400, 100) if quick else (2000, 500)
    return [Load(1024, 20, small), Load(102400, 20, large), Load(1024, 1, small)]


# -- PostgreSQL ------------------------------------------------------------------------


def settle(server: PgServer, database: str) -> None:
    """VACUUM ANALYZE and CHECKPOINT after the bulk adds, so that autovacuum and the
    checkpointer do not land in the middle of C's first runs (a settled production
    database has had both)."""
    import psycopg

    with psycopg.connect(
        host=server.host, port=server.port, user="postgres", dbname=database, autocommit=True
    ) as conn:
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")


@contextmanager
def postgres() -> Iterator[PgServer]:
    """A private, durable PostgreSQL on 127.0.0.1 with the ``qtoaster`` role; always removed."""
    server = PgServer()
    try:
        server.init()
        with open(server.data / "postgresql.conf", "a") as conf:  # later lines win
            conf.writelines(f"{k} = {v}\n" for k, v in PG_DURABLE.items())
        for attempt in range(3):
            try:
                server.start()
                break
            except RuntimeError:
                if attempt == 2:
                    raise
                server.move_port()  # the free port was taken before the server bound it
        server.create_role()
        yield server
    finally:
        server.destroy()


# -- adding users ----------------------------------------------------------------------


def cli_has_from_file() -> bool:
    done = subprocess.run(
        [str(QTOASTER), "user", "add", "--help"], capture_output=True, text=True, timeout=60
    )
    return "--from-file" in done.stdout


def time_add_users(home: Path, url: str | None, count: int, passwords: bool) -> tuple[float, str]:
    """Seconds to add ``count`` users to the home's directory, and how it was done."""
    lines = [f"{user_address(i)}:pw-{i}" if passwords else user_address(i) for i in range(count)]
    if cli_has_from_file():
        users_file = home.parent / f"users-{'pw' if passwords else 'nopw'}.txt"
        users_file.write_text("\n".join(lines) + "\n")
        argv = [str(QTOASTER), "user", "add", "--from-file", str(users_file), "--home", str(home)]
        start = time.monotonic()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, timeout=900)
        return time.monotonic() - start, "qtoaster user add --from-file"
    from qtoaster.core.home import Home
    from qtoaster.directory.passwords import hash_password
    from qtoaster.directory.store import Directory, NewUser

    start = time.monotonic()
    hashes: list[str | None] = [None] * count
    if passwords:
        # argon2id costs ~25 ms a hash: one process per core, as a bulk add should.
        with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            hashes = list(pool.map(hash_password, [f"pw-{i}" for i in range(count)], chunksize=64))
    directory = Directory.open(Home(home), url)
    try:
        directory.add_users(NewUser(user_address(i), hashes[i]) for i in range(count))
    finally:
        directory.close()
    how = "Directory.add_users" + (", hash_password in a process pool" if passwords else "")
    return time.monotonic() - start, how


# -- RCPT lookups with a cold cache ---------------------------------------------------


@dataclass
class RcptResult:
    config: str
    rcpts: int = 0
    seconds: float = 0.0
    accepted_known: int = 0
    refused_unknown: int = 0
    unexpected: int = 0  # any other reply, or a known user refused / unknown accepted
    timed_out: bool = False
    codes: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.rcpts / self.seconds if self.seconds > 0 else 0.0


async def _reply(reader: asyncio.StreamReader) -> int:
    """The code of one (possibly multiline) SMTP reply (RFC 5321 section 4.2.1)."""
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("server closed the connection")
        if line[3:4] != b"-":
            return int(line[:3])


async def _rcpt_session(
    port: int, jobs: list[list[tuple[str, bool]]], result: RcptResult, chkuser: bool
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await _reply(reader)
        writer.write(b"EHLO client.test\r\n")
        await _reply(reader)
        while jobs:
            job = jobs.pop()
            # RFC 2920: MAIL, the RCPTs and RSET may all be sent in one group.
            group = ["MAIL FROM:<bench@client.test>"]
            group += [f"RCPT TO:<{address}>" for address, _ in job] + ["RSET"]
            writer.write("".join(f"{c}\r\n" for c in group).encode())
            await writer.drain()
            codes = [await _reply(reader) for _ in group]
            for (_, known), code in zip(job, codes[1:-1], strict=True):
                result.rcpts += 1
                result.codes[str(code)] = result.codes.get(str(code), 0) + 1
                if code == 250 and (known or not chkuser):
                    result.accepted_known += known
                elif code == 550 and not known and chkuser:
                    result.refused_unknown += 1
                else:
                    result.unexpected += 1
        writer.write(b"QUIT\r\n")
        await writer.drain()
    finally:
        writer.close()


def rcpt_test(config: str, port: int, users: int, chkuser: bool, deadline_s: float) -> RcptResult:
    """Every user once (a fresh server: all miss the cache), in shuffled transactions of
    RCPT_KNOWN known + RCPT_UNKNOWN unknown addresses over RCPT_SESSIONS sessions."""
    rng = random.Random(1)
    order = rng.sample(range(USERS), users)
    jobs: list[list[tuple[str, bool]]] = []
    for n in range(0, users, RCPT_KNOWN):
        job = [(user_address(i), True) for i in order[n : n + RCPT_KNOWN]]
        job += [(f"nx{rng.randrange(10**9):09d}@{DOMAIN}", False) for _ in range(RCPT_UNKNOWN)]
        rng.shuffle(job)
        jobs.append(job)
    result = RcptResult(config)

    async def run_all() -> None:
        sessions = [_rcpt_session(port, jobs, result, chkuser) for _ in range(RCPT_SESSIONS)]
        await asyncio.wait_for(asyncio.gather(*sessions), timeout=deadline_s)

    start = time.monotonic()
    try:
        asyncio.run(run_all())
    except TimeoutError:
        result.timed_out = True
    result.seconds = time.monotonic() - start
    return result


# -- the suite -------------------------------------------------------------------------


def servers(workdir: Path, port: int, pg_url: str) -> dict[str, QtoasterServer]:
    def server(name: str, chkuser: str, url: str | None) -> QtoasterServer:
        settings = {"chkuser": {"mode": f'"{chkuser}"', **NO_DELAY}}
        if url:
            settings["database"] = {"url": f'"{url}"'}
        return QtoasterServer(workdir / name, port=port, name=name, settings=settings)

    return {
        "A": server("A", "off", None),
        "B": server("B", "domain", None),
        "C": server("C", "domain", pg_url),
    }


def run_config(
    server: QtoasterServer, loads: list[Load], users: int, deadline_s: float
) -> tuple[RcptResult, list[Result]]:
    """One fresh start: the cold-cache RCPT test first, then warm-up and the loads."""
    server.start()
    try:
        rcpt = rcpt_test(server.name, server.port, users, server.name != "A", deadline_s)
        print(
            f"  {server.name} RCPT: {rcpt.rcpts} in {rcpt.seconds:.2f}s = {rcpt.rate:.0f}/s"
            f" codes {rcpt.codes} unexpected {rcpt.unexpected}"
            f"{' TIMED OUT' if rcpt.timed_out else ''}",
            flush=True,
        )
        run_load(server, Load(1024, 5, WARMUP), deadline_s)
        results = []
        for load in loads:
            result = run_load(server, load, deadline_s)
            flag = " INCOMPLETE" if result.timed_out else ""
            print(
                f"  {server.name} {load.size // 1024:>4} KB s={load.sessions:<3}"
                f" {result.delivered}/{load.messages} in {result.seconds:.2f}s"
                f" = {result.rate:.1f} msg/s{flag}",
                flush=True,
            )
            results.append(result)
        return rcpt, results
    finally:
        server.stop()


def add_timings(
    workdir: Path, port: int, pg: PgServer, count: int, configs: dict[str, QtoasterServer]
) -> list[dict[str, object]]:
    """The users of B and C (timed: without passwords), then, in throw-away homes, ``count``
    users with passwords (fewer than USERS: extrapolated; 0: skipped)."""
    timings: list[dict[str, object]] = []
    for name, db in (("B", "sqlite"), ("C", "postgresql")):
        seconds, how = time_add_users(configs[name].home, _url(configs[name]), USERS, False)
        timings.append(dict(database=db, passwords=False, users=USERS, seconds=seconds, how=how))
        print(f"  add {USERS} users, {db}, no passwords: {seconds:.1f}s ({how})", flush=True)
    for db in ("sqlite", "postgresql") if count else ():
        scratch = QtoasterServer(workdir / f"pw-{db}", port=port, name=f"pw-{db}")
        if db == "postgresql":
            scratch.settings = {"database": {"url": f'"{pg.url(pg.create_database())}"'}}
        scratch.workdir.mkdir(parents=True, exist_ok=True)
        scratch.configure()
        seconds, how = time_add_users(scratch.home, _url(scratch), count, True)
        timings.append(dict(database=db, passwords=True, users=count, seconds=seconds, how=how))
        note = f" (x{USERS // count} = {seconds * USERS / count:.0f}s)" if count < USERS else ""
        print(f"  add {count} users, {db}, passwords: {seconds:.1f}s{note} ({how})", flush=True)
    return timings


def _url(server: QtoasterServer) -> str | None:
    literal = server.settings.get("database", {}).get("url")
    return literal.strip('"') if literal else None


def report(
    loads: list[Load], runs: dict[str, list[Result]], rcpts: dict[str, list[RcptResult]]
) -> str:
    def median(name: str, load: Load) -> float:
        rates = [r.rate for r in runs[name] if (r.size, r.sessions) == (load.size, load.sessions)]
        return statistics.median(rates) if rates else 0.0

    lines = [f"{'load':<14}{'A msg/s':>9}{'B msg/s':>9}{'C msg/s':>9}{'B/A':>7}{'C/A':>7}"]
    for load in loads:
        a, b, c = (median(n, load) for n in "ABC")
        marks = {n: "" if a and v / a >= BARS[n] else " !" for n, v in (("B", b), ("C", c))}
        lines.append(
            f"{f'{load.size // 1024} KB x {load.sessions}':<14}{a:>9.1f}{b:>9.1f}{c:>9.1f}"
            f"{b / a if a else 0:>7.2f}{marks['B']:2}{c / a if a else 0:>5.2f}{marks['C']:2}"
        )
    lines.append("medians; bars B/A >= 0.90, C/A >= 0.80 (! = below the bar)")
    for name, results in rcpts.items():
        rate = statistics.median(r.rate for r in results)
        bad = sum(r.unexpected for r in results) + sum(r.timed_out for r in results)
        lines.append(f"RCPT/s cold cache {name}: {rate:.0f} (median; {bad} unexpected/late)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages, 1 repeat")
    parser.add_argument("--repeat", type=int, help="starts per configuration (3; --quick 1)")
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/qtoaster-bench-dir"))
    parser.add_argument("--port", type=int, default=10027)
    parser.add_argument("--deadline", type=float, default=120.0, help="seconds per run")
    parser.add_argument(
        "--password-users",
        type=int,
        help="users of the with-password adds (10,000; --quick 1,000; 0 = skip them)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    install()
    # Recreated per run: each run leaves 40,000 Maildirs behind.
    shutil.rmtree(args.workdir, ignore_errors=True)
    workdir = args.workdir
    loads, repeat = plan(args.quick), args.repeat or (1 if args.quick else 3)
    rcpt_users = 5000 if args.quick else USERS
    with_passwords = args.password_users
    if with_passwords is None:
        with_passwords = 1000 if args.quick else USERS
    runs: dict[str, list[Result]] = {n: [] for n in "ABC"}
    rcpts: dict[str, list[RcptResult]] = {n: [] for n in "ABC"}
    with postgres() as pg:
        pg_database = pg.create_database()
        pg_url = pg.url(pg_database)
        configs = servers(workdir, args.port, pg_url)
        for server in configs.values():
            server.workdir.mkdir(parents=True)
            server.configure()
        print(f"PostgreSQL on 127.0.0.1:{pg.port}; homes in {workdir}", flush=True)
        timings = add_timings(workdir, args.port, pg, with_passwords, configs)
        settle(pg, pg_database)
        for n in range(repeat):
            print(f"repeat {n + 1}/{repeat}", flush=True)
            for name, server in configs.items():
                rcpt, results = run_config(server, loads, rcpt_users, args.deadline)
                rcpts[name].append(rcpt)
                runs[name].extend(results)
    print()
    print(report(loads, runs, rcpts))
    for t in timings:
        print(
            f"user add {t['users']} {t['database']:<10} passwords={t['passwords']!s:<5}"
            f" {t['seconds']:.1f}s ({t['how']})"
        )
    if args.json:
        payload = {
            "throughput": {n: [asdict(r) | {"rate": r.rate} for r in rs] for n, rs in runs.items()},
            "rcpt": {n: [asdict(r) | {"rate": r.rate} for r in rs] for n, rs in rcpts.items()},
            "user_add": timings,
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
