"""IMAP benchmark: qtoaster's imapd against Dovecot's imap on loopback (issue 15).

Same users, passwords and message files on both sides (each file written once into
qtoaster's Maildir and hard-linked into Dovecot's, as bench/pop3.py does; separate
directories, so Dovecot's index files and each server's renames never meet). Plain IMAP
with LOGIN on both (qtoaster ``[auth] allow_plaintext = true``, Dovecot
``disable_plaintext_auth = no``); the same argon2id PHC strings verify on both.

Loads (bench/README.md "IMAP" gives the exact commands):
1. fetch: LOGIN, SELECT INBOX, FETCH 1:* (FLAGS ENVELOPE), then every body: ``per-msg``
   = UID FETCH <uid> (BODY.PEEK[]) per message, WINDOW in flight (what mbsync does, its
   PipelineDepth being unlimited by default), or ``1:*`` = one UID FETCH 1:* (BODY.PEEK[]);
   LOGOUT. One client on ``solo``, then 20 clients on box00..box19 at once. The first pass
   over a mailbox is "cold" (the server has no index or state for it yet: Dovecot builds its
   index, qtoaster its UID state); later passes are "warm". Every body's length must equal
   the message's CRLF size: a mismatch aborts the run.
2. search: on ``search`` (SEARCH_MESSAGES messages, opened once first: that SELECT is
   reported as "first select"), SEARCH FROM, SEARCH SUBJECT (header) and SEARCH BODY
   (body text, no full-text index on either side); the hit counts are checked.
3. qresync: ENABLE QRESYNC + SELECT on ``resync``, note UIDVALIDITY and HIGHESTMODSEQ,
   LOGOUT; a second session changes the flags of 100 messages; the timed session is LOGIN,
   ENABLE QRESYNC, SELECT INBOX (QRESYNC (uidvalidity modseq)), which must report exactly
   those 100 FETCHes.
4. idle: N sessions (users idle000..idle099 in turn) each LOGIN, SELECT INBOX, IDLE, at most
   CONNECT_WINDOW being set up at once; then VmRSS and Pss summed over the server's process
   tree (Dovecot: the master and every child: logins, imap, imap-hibernate, auth, anvil...).
   Dovecot runs it twice: plain, and with ``imap_hibernate_timeout`` (the imap process hands
   the idle connection to imap-hibernate and exits).

Server CPU (utime+stime of the process tree, reaped children included) is read around
every run. The client is one asyncio process on the same 2 cores: its CPU is the machine's
minus the server's (not separated out yet; see bench/README.md "IMAP").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from dovecot import DOVECOT, DovecotServer, version
from idle_memory import raise_nofile, tree_cpu, tree_memory
from imapclient import ImapClient, ImapError, fetch_literals, select_value
from pop3 import Pop3Qtoaster, password
from pop3 import message as pop3_message
from qtoaster_side import QTOASTER, override_toml

DOMAIN = "bench.test"
SIZE = 10240
WINDOW = 64  # UID FETCHes in flight per client
CONNECT_WINDOW = 100  # idle sessions being set up at once
IDLE_USERS = 100
PORTS = {"dovecot": 10143, "qtoaster": 10144}
IMAP_BINARY = Path("/usr/lib/dovecot/imap")


def install() -> None:
    """apt-get install dovecot-imapd (with dovecot-core), non-interactive; policy-rc.d or
    scripts/setup keeps the package's own instance from running."""
    if DOVECOT.exists() and IMAP_BINARY.exists():
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    argv = ["apt-get", "install", "-y", "--no-install-recommends", "dovecot-imapd"]
    subprocess.run(argv, env=env, check=True)


def users(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i:02d}@{DOMAIN}" for i in range(n)]


def idle_users() -> list[str]:
    return [f"idle{i:03d}@{DOMAIN}" for i in range(IDLE_USERS)]


class DovecotImap(DovecotServer):
    """Dovecot's imap on 127.0.0.1:port; ``hibernate`` turns imap-hibernate on."""

    hibernate: bool = False

    def conf_text(self) -> str:
        hibernate = "imap_hibernate_timeout = 1s" if self.hibernate else ""
        return f"""\
# Written by bench/imap.py for the qtoaster IMAP benchmark; regenerated on every configure().
instance_name = qtoaster-bench-dovecot-imap
protocols = imap
listen = 127.0.0.1
base_dir = {self.base_dir}
state_dir = {self.state_dir}
log_path = {self.log_file}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
mail_location = maildir:~/Maildir
mail_uid = 65534
mail_gid = 65534
first_valid_uid = 65534
last_valid_uid = 65534
first_valid_gid = 65534
last_valid_gid = 65534
default_internal_user = dovecot
default_login_user = dovenull
# The idle load holds thousands of sessions of 100 users from one address.
mail_max_userip_connections = 100000
default_client_limit = 15000
{hibernate}
passdb {{
  driver = passwd-file
  args = {self.passwd_file}
}}
userdb {{
  driver = passwd-file
  args = {self.passwd_file}
}}
service imap-login {{
  process_limit = 20000
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service imap {{
  process_limit = 20000
  unix_listener imap-master {{
    mode = 0666
  }}
}}
service imap-hibernate {{
  unix_listener imap-hibernate {{
    mode = 0666
  }}
}}
"""

    def wait_ready(self, deadline_s: float) -> None:
        asyncio.run(_wait_greeting(self.port, deadline_s))


async def _wait_greeting(port: int, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            client = await ImapClient.connect("127.0.0.1", port)
            await client.logout()
            return
        except (OSError, ImapError, asyncio.IncompleteReadError):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no IMAP greeting on 127.0.0.1:{port}") from None
            await asyncio.sleep(0.1)


class ImapQtoaster(Pop3Qtoaster):
    """The POP3 benchmark's home (users, passwords, plaintext auth), served over IMAP."""

    def configure_users(self, users: list[str]) -> None:
        super().configure_users(users)
        toml = self.home / "qtoaster.toml"
        # The idle load logs CONNECT_WINDOW sessions in at once from 127.0.0.1.
        auth = {"max_in_flight": str(CONNECT_WINDOW * 2)}
        toml.write_text(override_toml(toml.read_text(), {"auth": auth}))

    def run_command(self) -> list[str]:
        # init wrote the POP3 listener on self.port (Pop3Qtoaster): move it out of the way.
        return [*super().run_command(), "--imap", f"127.0.0.1:{self.port}", "--pop3", "127.0.0.1:0"]


def search_message(n: int) -> bytes:
    """Message n of the search mailbox: one of 10 senders; every 10th a "quarterly report";
    every 100th has "needle" in its body (on its own word, mid-body)."""
    sender = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"]
    subject = f"quarterly report {n}" if n % 10 == 0 else f"message {n}"
    head = (
        f"From: {sender[n % 10]} <{sender[n % 10]}@client.test>\nTo: search@{DOMAIN}\n"
        f"Subject: {subject}\nDate: Tue, 25 Nov 2026 07:00:00 +0000\n"
        f"Message-Id: <{n}.search@client.test>\n\n"
    ).encode()
    line = b"lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor\n"
    lines = [line] * ((SIZE - len(head)) // len(line))
    if n % 100 == 0:
        lines[len(lines) // 2] = b"a haystack line with the needle in it, padded to the size\n"
    body = b"".join(lines)
    return head + body + b"x" * (SIZE - len(head) - len(body) - 1) + b"\n"


def fill(
    qt: ImapQtoaster,
    dc: DovecotImap,
    plan: dict[str, Callable[[int], bytes]],
    counts: dict[str, int],
) -> None:
    """Write each box's messages into qtoaster's Maildir new/, hard-link into Dovecot's."""
    now = int(time.time()) - 86400
    serial = 0
    for box, make in plan.items():
        qnew, dnew = qt.maildir(box) / "new", dc.maildir(box) / "new"
        qnew.mkdir(parents=True, exist_ok=True)
        for n in range(counts[box]):
            serial += 1
            data = make(n)
            name = f"{now + n}.M{serial % 1000000}P{os.getpid()}Q{serial}.bench,S={len(data)}"
            (qnew / name).write_bytes(data)
            os.utime(qnew / name, (now + n, now + n))  # delivery order = mtime order
            os.link(qnew / name, dnew / name)
    dc.fix_ownership()


@dataclass
class Run:
    server: str
    load: str
    seconds: float
    count: int  # messages fetched, searches, resyncs, sessions
    cpu: float  # server CPU seconds
    note: str = ""

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0


async def fetch_box(port: int, user: str, expect: int, mode: str) -> int:
    """One client's fetch load; returns the bytes of the bodies received."""
    client = await ImapClient.connect("127.0.0.1", port)
    await client.login(user, password(user))
    done = await client.command("SELECT INBOX")
    if select_value(done.untagged, b"EXISTS") != expect:
        raise ImapError(f"{user}: SELECT shows {done.untagged}, expected {expect}")
    envelopes = await client.command("FETCH 1:* (FLAGS ENVELOPE)")
    if sum(b" FETCH " in r.line for r in envelopes.untagged) != expect:
        raise ImapError(f"{user}: FETCH 1:* (FLAGS ENVELOPE) short")
    uids = await client.command("UID FETCH 1:* (UID RFC822.SIZE)")
    sizes = {}
    for r in uids.untagged:
        words = r.line.replace(b"(", b" ").replace(b")", b" ").split()
        sizes[int(words[words.index(b"UID") + 1])] = int(words[words.index(b"RFC822.SIZE") + 1])
    bodies: list[bytes] = []
    if mode == "1:*":
        bodies = fetch_literals((await client.command("UID FETCH 1:* (BODY.PEEK[])")).untagged)
    else:
        order = sorted(sizes)
        tags = []
        for i, uid in enumerate(order):
            tags.append(client.send(f"UID FETCH {uid} (BODY.PEEK[])"))
            if i >= WINDOW:
                bodies += fetch_literals((await client.wait(tags[i - WINDOW])).untagged)
        for tag in tags[max(0, len(tags) - WINDOW) :]:
            bodies += fetch_literals((await client.wait(tag)).untagged)
    if sorted(len(b) for b in bodies) != sorted(sizes.values()) or len(bodies) != expect:
        raise ImapError(f"{user}: {len(bodies)} bodies, sizes differ from RFC822.SIZE")
    await client.logout()
    return sum(len(b) for b in bodies)


async def search_once(port: int, user: str, criteria: str, expect: int) -> None:
    client = await ImapClient.connect("127.0.0.1", port)
    await client.login(user, password(user))
    await client.command("SELECT INBOX")
    done = await client.command(f"SEARCH {criteria}")
    hits = [r for r in done.untagged if r.line.startswith(b"* SEARCH")]
    found = len(hits[0].line.split()) - 2 if hits else 0
    if found != expect:
        raise ImapError(f"SEARCH {criteria}: {found} hits, expected {expect}")
    await client.logout()


async def qresync_state(port: int, user: str) -> tuple[int, int]:
    client = await ImapClient.connect("127.0.0.1", port)
    await client.login(user, password(user))
    await client.command("ENABLE QRESYNC")
    done = await client.command("SELECT INBOX")
    state = (
        select_value(done.untagged, b"UIDVALIDITY"),
        select_value(done.untagged, b"HIGHESTMODSEQ"),
    )
    await client.logout()
    return state


async def change_flags(port: int, user: str, count: int, rounds: int) -> None:
    """Flag (odd round: unflag) ``count`` messages spread over the mailbox, one STORE each."""
    client = await ImapClient.connect("127.0.0.1", port)
    await client.login(user, password(user))
    done = await client.command("SELECT INBOX")
    exists = select_value(done.untagged, b"EXISTS")
    count = min(count, exists)
    sign = "-" if rounds % 2 else "+"
    step = max(1, exists // count)
    for n in range(1, step * count + 1, step):
        await client.command(f"STORE {n} {sign}FLAGS.SILENT (\\Flagged)")
    await client.logout()


async def qresync_select(port: int, user: str, state: tuple[int, int], expect: int) -> None:
    client = await ImapClient.connect("127.0.0.1", port)
    await client.login(user, password(user))
    await client.command("ENABLE QRESYNC")
    done = await client.command(f"SELECT INBOX (QRESYNC ({state[0]} {state[1]}))")
    changed = sum(b" FETCH " in r.line for r in done.untagged)
    if changed != expect:
        raise ImapError(f"QRESYNC SELECT reported {changed} changes, expected {expect}")
    await client.logout()


async def open_idle(port: int, count: int, deadline_s: float) -> list[ImapClient]:
    """``count`` sessions in IDLE (bounded by the deadline: fewer if it passes)."""
    raise_nofile(count + 1000)
    sessions: list[ImapClient] = []
    gate = asyncio.Semaphore(CONNECT_WINDOW)
    names = idle_users()
    deadline = time.monotonic() + deadline_s

    async def one(i: int) -> None:
        async with gate:
            if time.monotonic() > deadline:
                return
            client = await ImapClient.connect("127.0.0.1", port)
            user = names[i % len(names)]
            await client.login(user, password(user))
            await client.command("SELECT INBOX")
            await client.idle()
            sessions.append(client)

    results = await asyncio.gather(*(one(i) for i in range(count)), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        print(f"  idle: {len(errors)} sessions failed, first: {errors[0]!r}", flush=True)
    return sessions


async def measure(
    server: str, load: str, root: int, count: int, work: Callable[[], Awaitable[object]]
) -> Run:
    cpu = tree_cpu(root)
    started = time.perf_counter()
    await work()
    run = Run(server, load, time.perf_counter() - started, count, tree_cpu(root) - cpu)
    print(
        f"  {server:8} {load:24} {run.seconds:8.3f} s {run.rate:9.1f}/s  "
        f"server cpu {run.cpu:6.2f} s",
        flush=True,
    )
    return run


async def suite(name: str, port: int, root: int, args: argparse.Namespace) -> list[Run]:
    runs: list[Run] = []
    m, boxes = args.messages, users("box", args.mailboxes)
    solo = f"solo@{DOMAIN}"

    def many(mode: str) -> Callable[[], Awaitable[object]]:
        return lambda: asyncio.gather(*(fetch_box(port, b, m, mode) for b in boxes))

    def one(mode: str) -> Callable[[], Awaitable[object]]:
        return lambda: fetch_box(port, solo, m, mode)

    runs.append(await measure(name, "fetch 1 client cold", root, m, one("per-msg")))
    for mode in ("per-msg", "1:*"):
        for _ in range(args.repeat):
            runs.append(await measure(name, f"fetch 1 client {mode}", root, m, one(mode)))
    n = len(boxes)
    runs.append(await measure(name, f"fetch {n} clients cold", root, m * n, many("per-msg")))
    for mode in ("per-msg", "1:*"):
        for _ in range(args.repeat):
            runs.append(await measure(name, f"fetch {n} clients {mode}", root, m * n, many(mode)))

    s, search = args.search, f"search@{DOMAIN}"
    runs.append(
        await measure(
            name, "search first select", root, 1, lambda: search_once(port, search, "ALL", s)
        )
    )
    searches = [
        ("FROM", 'FROM "alice"', (s + 9) // 10),
        ("SUBJECT", 'SUBJECT "quarterly report"', (s + 9) // 10),
        ("BODY", 'BODY "needle"', (s + 99) // 100),
    ]
    for label, criteria, expect in searches:
        for _ in range(args.repeat):
            work = lambda c=criteria, e=expect: search_once(port, search, c, e)  # noqa: E731
            runs.append(await measure(name, f"search {label}", root, 1, work))

    resync = f"resync@{DOMAIN}"
    for i in range(args.repeat):
        state = await qresync_state(port, resync)
        await change_flags(port, resync, 100, i)
        changed = min(100, m)
        work = lambda st=state, n=changed: qresync_select(port, resync, st, n)  # noqa: E731
        runs.append(await measure(name, "qresync 100 changes", root, 1, work))
    return runs


async def idle_suite(name: str, port: int, root: int, count: int, settle_s: float) -> Run:
    _, rss0, pss0 = tree_memory(root)
    started = time.perf_counter()
    cpu = tree_cpu(root)
    sessions = await open_idle(port, count, deadline_s=600.0)
    seconds = time.perf_counter() - started
    # imap-hibernate takes over after its timeout: wait until the process count stops
    # falling for settle_s (bounded).
    procs, rss, pss = tree_memory(root)
    stable_since, limit = time.monotonic(), time.monotonic() + 120.0
    while time.monotonic() - stable_since < settle_s and time.monotonic() < limit:
        await asyncio.sleep(0.5)
        now = tree_memory(root)
        if now[0] != procs:
            stable_since = time.monotonic()
        procs, rss, pss = now
    note = (
        f"{len(sessions)}/{count} sessions, {procs} procs, RSS {rss / 1024:.1f} MiB "
        f"(idle {rss0 / 1024:.1f}), PSS {pss / 1024:.1f} MiB (idle {pss0 / 1024:.1f}); "
        f"per session PSS {(pss - pss0) / max(1, len(sessions)):.1f} KiB"
    )
    print(f"  {name:8} idle: {note}", flush=True)
    run = Run(name, "idle sessions", seconds, len(sessions), tree_cpu(root) - cpu, note)
    for client in sessions:
        client.close()
    return run


def table(runs: list[Run]) -> str:
    out = [
        "| load | Dovecot s | Dovecot /s | qtoaster s | qtoaster /s | ratio q/D | CPU s D / q |",
        "|---|---|---|---|---|---|---|",
    ]
    for load in dict.fromkeys(r.load for r in runs if r.load != "idle sessions"):
        cells = {}
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
        row = f"| {load} | " + (f"{d[0]:.3f} | {d[1]:.1f} | " if d else "- | - | ")
        row += f"{q[0]:.3f} | {q[1]:.1f} | " if q else "- | - | "
        row += f"{ratio} | {d[2] if d else 0:.2f} / {q[2] if q else 0:.2f} |"
        out.append(row)
    out += [f"\n{r.server} idle: {r.note}" for r in runs if r.load == "idle sessions"]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke sizes, 1 repeat")
    parser.add_argument("--server", choices=["dovecot", "qtoaster", "both"], default="both")
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/qtoaster-bench-imap"))
    parser.add_argument("--mailboxes", type=int, default=20)
    parser.add_argument("--messages", type=int, help="per fetch mailbox (1000)")
    parser.add_argument("--search", type=int, help="messages in the search mailbox (10000)")
    parser.add_argument("--idle", type=int, help="IDLE sessions (10000; 0 skips)")
    parser.add_argument(
        "--idle-plain-max",
        type=int,
        default=2000,
        help="cap for Dovecot without imap-hibernate (a process per session)",
    )
    parser.add_argument("--repeat", type=int)
    parser.add_argument(
        "--qtoaster",
        type=Path,
        help="the qtoaster command (default: the "
        "checkout's .venv/bin/qtoaster, else the one on PATH)",
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", action="store_true", help="leave the workdir in place")
    args = parser.parse_args(argv)
    args.messages = args.messages or (200 if args.quick else 1000)
    args.search = args.search or (2000 if args.quick else 10000)
    args.idle = (500 if args.quick else 10000) if args.idle is None else args.idle
    args.repeat = args.repeat or (1 if args.quick else 3)
    install()
    if args.workdir.exists():
        shutil.rmtree(args.workdir)
    args.workdir.mkdir(parents=True)
    args.workdir.chmod(0o755)
    boxes = users("box", args.mailboxes)
    everyone = [*boxes, f"solo@{DOMAIN}", f"search@{DOMAIN}", f"resync@{DOMAIN}", *idle_users()]
    command = args.qtoaster or (
        QTOASTER if QTOASTER.exists() else Path(shutil.which("qtoaster") or QTOASTER)
    )
    qt = ImapQtoaster(args.workdir, port=PORTS["qtoaster"], qtoaster=command)
    dc = DovecotImap(args.workdir, port=PORTS["dovecot"])
    started = time.perf_counter()
    qt.configure_users(everyone)
    hashes = {a: "{ARGON2ID}" + phc for a, phc in qt.hashes().items()}
    dc.configure(hashes)
    plan: dict[str, Callable[[int], bytes]] = {}
    counts: dict[str, int] = {}
    for box in [*boxes, f"solo@{DOMAIN}", f"resync@{DOMAIN}"]:
        plan[box] = lambda n, b=box: pop3_message(b, n)
        counts[box] = args.messages
    plan[f"search@{DOMAIN}"], counts[f"search@{DOMAIN}"] = search_message, args.search
    for box in idle_users():
        plan[box], counts[box] = search_message, 0
    fill(qt, dc, plan, counts)
    print(f"setup: {time.perf_counter() - started:.1f} s; {version()}", flush=True)
    runs: list[Run] = []
    if args.server in ("dovecot", "both"):
        for hibernate in (False, True):
            dc.hibernate = hibernate
            dc.conf_file.write_text(dc.conf_text())
            try:
                dc.start()
                if not hibernate:
                    runs += asyncio.run(suite("dovecot", dc.port, dc.master_pid(), args))
                if args.idle:
                    count = args.idle if hibernate else min(args.idle, args.idle_plain_max)
                    label = "dovecot+hib" if hibernate else "dovecot"
                    runs.append(
                        asyncio.run(idle_suite(label, dc.port, dc.master_pid(), count, 3.0))
                    )
            finally:
                dc.stop()
    if args.server in ("qtoaster", "both"):
        try:
            qt.start()
            asyncio.run(_wait_greeting(qt.port, 30.0))
            runs += asyncio.run(suite("qtoaster", qt.port, qt.master_pid(), args))
            if args.idle:
                runs.append(
                    asyncio.run(idle_suite("qtoaster", qt.port, qt.master_pid(), args.idle, 3.0))
                )
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
