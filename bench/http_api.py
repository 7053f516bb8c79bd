"""HTTP API benchmark (issue 17): the http role against the issue's three bars, on loopback.

1. Adding N users (default 10,000, passwords hashed): ``qtoaster user add --from-file`` in
   one domain, then the API's ``POST /api/v1/domains/{d}/users:batch`` in another (chunks
   of ``--chunk`` users sent by ``--clients`` httpx clients at once), and, for reference,
   ``--single`` users one ``POST /api/v1/domains/{d}/users`` each from the same clients.
   Bar: API time <= CLI time x 1.2.
2. The users list of the N-user domain: ``GET /api/v1/domains/{d}/users`` with paging
   (first, middle, last page) and search (a substring hit, a miss), ``--repeat`` times
   each; the server time is the response's ``Server-Timing: app;dur=MS`` (httpd/timing.py),
   the client time on loopback (TLS included) is shown next to it.  Bar: < 100 ms.
3. Idle memory: the process tree of ``qtoaster run`` without and with ``--http``, each
   started fresh on the same home and left idle ``--settle`` seconds; PSS and RSS summed
   (bench/idle_memory.py), and those of the http role and its executor alone.
   Bar: the difference < 30 MB.

Everything lives in ``--workdir`` (recreated); the checkout's ``src`` runs (PYTHONPATH).
As root the roles run as their own users, as in production.  Prints the figures and the
ratios; ``--json FILE`` writes them too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from idle_memory import tree_memory, tree_pids

REPO = Path(__file__).resolve().parent.parent
A = "/api/v1"
READY = "qtoaster ready:"
LISTENER = re.compile(r"\b(smtp|http) 127\.0\.0\.\d+:(\d+)")


def env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep + path if path else ''}"}


QT = [sys.executable, "-m", "qtoaster"]


def qt(home: Path, *args: str) -> str:
    done = subprocess.run(
        [*QT, *args, "--home", str(home)],
        env=env(),
        check=True,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    return done.stdout


def make_home(workdir: Path) -> Path:
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    for parent in workdir.absolute().parents:  # the roles must reach the home (as root)
        if os.geteuid() == 0 and parent.exists() and not parent.stat().st_mode & 0o001:
            parent.chmod(parent.stat().st_mode | 0o001)
    home = workdir / "home"
    subprocess.run(
        [*QT, "init", "--home", str(home), "--me", "bench.test", "--smtp", "127.0.0.1:0"],
        env=env(),
        check=True,
        capture_output=True,
        timeout=120,
    )
    settings = home / "qtoaster.toml"
    settings.write_text(settings.read_text() + "\n[mailauth]\nenabled = false\n")
    return home


class Run:
    """``qtoaster run`` as our child in its own session; stopped by its pid."""

    def __init__(self, home: Path, *extra: str) -> None:
        self.log = (home.parent / "server.log").open("ab")
        self.proc = subprocess.Popen(
            [*QT, "run", "--home", str(home), *extra],
            env=env(),
            stdout=subprocess.PIPE,
            stderr=self.log,
            start_new_session=True,
        )
        self.ports = self._wait_ready(60.0)

    def _wait_ready(self, deadline_s: float) -> dict[str, int]:
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline, buf = time.monotonic() + deadline_s, ""
        while time.monotonic() < deadline:
            if sel.select(timeout=0.2):
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                buf += chunk.decode(errors="replace")
                if READY in buf and "\n" in buf.split(READY, 1)[1]:
                    line = buf.split(READY, 1)[1].split("\n", 1)[0]
                    return {kind: int(port) for kind, port in LISTENER.findall(line)}
        self.stop()
        raise RuntimeError(f"qtoaster run did not become ready: {buf!r}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the group we started, by its id
                self.proc.wait(30)
        self.log.close()


def names(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i:05d}" for i in range(n)]


def cli_add(home: Path, domain: str, n: int) -> float:
    qt(home, "domain", "add", domain)
    batch = home.parent / f"{domain}.users"
    batch.write_text("".join(f"{u}@{domain}:pw-{u}\n" for u in names("u", n)))
    started = time.monotonic()
    qt(home, "user", "add", "--from-file", str(batch))
    return time.monotonic() - started


def client(port: int, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"https://127.0.0.1:{port}",
        verify=False,  # the home's own self-signed certificate
        headers={"Authorization": f"Bearer {token}"},
        timeout=3600,
    )


async def api_add(
    port: int, token: str, domain: str, users: list[str], chunk: int, k: int
) -> float:
    """The API's batch endpoint: ``users`` in chunks, ``k`` clients posting at once."""
    chunks = [users[i : i + chunk] for i in range(0, len(users), chunk)]
    clients = [client(port, token) for _ in range(k)]
    r = await clients[0].post(f"{A}/domains", json={"name": domain})
    r.raise_for_status()

    async def worker(c: httpx.AsyncClient) -> None:
        while chunks:
            part = chunks.pop()
            body = {"users": [{"name": u, "password": f"pw-{u}"} for u in part]}
            r = await c.post(f"{A}/domains/{domain}/users:batch", json=body)
            if r.status_code != 201:
                raise RuntimeError(f"batch: {r.status_code} {r.text[:200]}")

    started = time.monotonic()
    await asyncio.gather(*(worker(c) for c in clients))
    elapsed = time.monotonic() - started
    for c in clients:
        await c.aclose()
    return elapsed


async def api_single(port: int, token: str, domain: str, users: list[str], k: int) -> float:
    """One POST per user, ``k`` clients at once."""
    todo = list(users)
    clients = [client(port, token) for _ in range(k)]
    (await clients[0].post(f"{A}/domains", json={"name": domain})).raise_for_status()

    async def worker(c: httpx.AsyncClient) -> None:
        while todo:
            u = todo.pop()
            r = await c.post(f"{A}/domains/{domain}/users", json={"name": u, "password": f"pw-{u}"})
            if r.status_code != 201:
                raise RuntimeError(f"user add: {r.status_code} {r.text[:200]}")

    started = time.monotonic()
    await asyncio.gather(*(worker(c) for c in clients))
    elapsed = time.monotonic() - started
    for c in clients:
        await c.aclose()
    return elapsed


async def list_times(port: int, token: str, domain: str, n: int, repeat: int) -> dict[str, Any]:
    """Server and client milliseconds of each list query (median, max over ``repeat``)."""
    queries = {
        "page 1 (offset 0, limit 50)": {"offset": 0, "limit": 50},
        f"middle page (offset {n // 2})": {"offset": n // 2, "limit": 50},
        f"last page (offset {n - 50})": {"offset": n - 50, "limit": 50},
        "search 'u0999' (10 hits)": {"search": "u0999", "limit": 50},
        "search '5' (many hits), page 1": {"search": "5", "limit": 50},
        "search 'nobody' (no hit)": {"search": "nobody", "limit": 50},
        "limit 500": {"offset": 0, "limit": 500},
    }
    out: dict[str, Any] = {}
    async with client(port, token) as c:
        await c.get(f"{A}/domains/{domain}/users", params={"limit": 1})  # connection, TLS
        for label, params in queries.items():
            server, wall = [], []
            for _ in range(repeat):
                started = time.perf_counter()
                r = await c.get(f"{A}/domains/{domain}/users", params=params)
                wall.append((time.perf_counter() - started) * 1000)
                r.raise_for_status()
                server.append(float(r.headers["server-timing"].split("dur=")[1]))
            out[label] = {
                "server_ms_median": statistics.median(server),
                "server_ms_max": max(server),
                "client_ms_median": statistics.median(wall),
                "total": r.json()["total"],
            }
    return out


def role_pids(root: int) -> list[int]:
    """The http role and its executor in the tree under ``root``."""
    found = []
    for pid in tree_pids(root):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in argv and (b"http" in argv or b"http-admin" in argv):
            found.append(pid)
    return found


def pids_memory(pids: list[int]) -> tuple[int, int]:
    def field(path: str, name: str) -> int:
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(name + ":"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    rss = sum(field(f"/proc/{p}/status", "VmRSS") for p in pids)
    pss = sum(field(f"/proc/{p}/smaps_rollup", "Pss") for p in pids)
    return rss, pss


def idle_memory(home: Path, settle: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, extra in (("without", ()), ("with", ("--http", "127.0.0.1:0"))):
        run = Run(home, *extra)
        try:
            time.sleep(settle)  # a fixed idle period is what is measured, not a readiness wait
            count, rss, pss = tree_memory(run.proc.pid)
            out[label] = {"processes": count, "rss_kib": rss, "pss_kib": pss}
            if extra:
                roles = role_pids(run.proc.pid)
                rss_r, pss_r = pids_memory(roles)
                out["http_role"] = {"processes": len(roles), "rss_kib": rss_r, "pss_kib": pss_r}
        finally:
            run.stop()
    out["added_pss_mib"] = (out["with"]["pss_kib"] - out["without"]["pss_kib"]) / 1024
    out["added_rss_mib"] = (out["with"]["rss_kib"] - out["without"]["rss_kib"]) / 1024
    return out


def print_memory(memory: dict[str, Any]) -> None:
    w, wo, role = memory["with"], memory["without"], memory["http_role"]
    print(
        f"idle memory: run {wo['pss_kib'] / 1024:.1f} MiB PSS ({wo['processes']} processes),"
        f" run --http {w['pss_kib'] / 1024:.1f} MiB PSS ({w['processes']});"
        f" added {memory['added_pss_mib']:.1f} MiB PSS, {memory['added_rss_mib']:.1f} MiB RSS"
        f" (bar < 30); http role + executor alone {role['pss_kib'] / 1024:.1f} MiB PSS,"
        f" {role['rss_kib'] / 1024:.1f} MiB RSS ({role['processes']} processes)",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=10000)
    parser.add_argument("--chunk", type=int, default=1000, help="users per batch request")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--single", type=int, default=500, help="users added one per request")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/qtoaster-bench-http"))
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--idle-only", action="store_true", help="only part 3 (idle memory), on an empty home"
    )
    args = parser.parse_args(argv)
    if args.users < 100:
        parser.error("--users: at least 100")

    home = make_home(args.workdir)
    results: dict[str, Any] = {"users": args.users, "cores": os.cpu_count()}
    if args.idle_only:
        results["memory"] = memory = idle_memory(home, args.settle)
        print_memory(memory)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
        return 0
    cli_s = cli_add(home, "cli.test", args.users)
    print(f"CLI user add --from-file: {args.users} users in {cli_s:.1f} s", flush=True)
    token = qt(home, "token", "add", "--name", "bench", "--site").strip()
    run = Run(home, "--http", "127.0.0.1:0")
    try:
        port = run.ports["http"]
        users = names("u", args.users)
        api_s = asyncio.run(api_add(port, token, "api.test", users, args.chunk, args.clients))
        print(
            f"API users:batch: {args.users} users in {api_s:.1f} s"
            f" ({args.clients} clients, {args.chunk} a request); API / CLI = {api_s / cli_s:.2f}"
            f" (bar <= 1.20)",
            flush=True,
        )
        single_s = 0.0
        if args.single:
            one = names("s", args.single)
            single_s = asyncio.run(api_single(port, token, "single.test", one, args.clients))
            print(
                f"API one user a request: {args.single} users in {single_s:.1f} s"
                f" ({args.single / single_s:.0f}/s, CLI {args.users / cli_s:.0f}/s)",
                flush=True,
            )
        lists = asyncio.run(list_times(port, token, "api.test", args.users, args.repeat))
    finally:
        run.stop()
    print(f"users list of api.test ({args.users + 1} users), {args.repeat} times each:")
    print("| query | server ms median | server ms max | client ms median | total |")
    print("| --- | --- | --- | --- | --- |")
    for label, t in lists.items():
        print(
            f"| {label} | {t['server_ms_median']:.1f} | {t['server_ms_max']:.1f}"
            f" | {t['client_ms_median']:.1f} | {t['total']} |"
        )
    memory = idle_memory(home, args.settle)
    print_memory(memory)
    results |= {
        "cli_s": cli_s,
        "api_batch_s": api_s,
        "api_over_cli": api_s / cli_s,
        "api_single": {"users": args.single, "s": single_s},
        "list": lists,
        "memory": memory,
    }
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
