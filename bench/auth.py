"""SMTP AUTH benchmark: logins per second on submission, one qtoaster against another.

Issue 13 moved password checks into the auth role (smtpd asks it over a Unix socket); its
bar is "no loss beyond 5% against today". This script runs the same load against each
``--qtoaster`` binary given (e.g. the checkout before the change and the one after), in
ABBA order, each server started fresh on its own home:

    EHLO, AUTH PLAIN (a correct password), QUIT: L sessions in a row, then L spread over
    M parallel clients; argon2id as qtoaster hashes it (m=19456 KiB, t=2, p=1).

Plain text AUTH (``[auth] allow_plaintext = true``) so that TLS does not blur the figure;
server CPU (utime+stime of the process tree) is read from /proc around each run.
Loopback only; every loop is bounded by L.
"""

from __future__ import annotations

import argparse
import base64
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from idle_memory import tree_cpu
from qtoaster_side import QtoasterServer, override_toml

DOMAIN = "bench.test"
IO_TIMEOUT = 60.0


class AuthQtoaster(QtoasterServer):
    def configure_users(self, users: list[str]) -> None:
        if self.home.exists():
            shutil.rmtree(self.home)
        q, h = str(self.qtoaster), str(self.home)
        smtp = f"127.0.0.1:{self.port}"
        subprocess.run(
            [q, "init", "--home", h, "--me", DOMAIN, "--smtp", smtp],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        toml = self.home / "qtoaster.toml"
        toml.write_text(override_toml(toml.read_text(), {"auth": {"allow_plaintext": "true"}}))
        subprocess.run(
            [q, "domain", "add", DOMAIN, "--home", h], check=True, stdout=subprocess.DEVNULL
        )
        listing = self.workdir / "users.txt"
        listing.write_text("".join(f"{u}:pw-{u}\n" for u in users))
        subprocess.run(
            [q, "user", "add", "--from-file", str(listing), "--home", h],
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def run_command(self) -> list[str]:
        return [str(self.qtoaster), "run", "--home", str(self.home)]


def _reply(sock: socket.socket) -> bytes:
    data = b""
    while True:
        line = b""
        while not line.endswith(b"\n"):
            piece = sock.recv(4096)
            if not piece:
                raise ConnectionError(f"closed after {data + line!r}")
            line += piece
        data += line
        last = data.rstrip(b"\r\n").rsplit(b"\n", 1)[-1]
        if len(last) >= 4 and last[3:4] == b" ":
            return data


def auth_once(port: int, user: str) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as sock:
        sock.recv(4096)  # greeting (one line)
        sock.sendall(b"EHLO bench\r\n")
        _reply(sock)
        token = base64.b64encode(f"\0{user}\0pw-{user}".encode()).decode()
        sock.sendall(f"AUTH PLAIN {token}\r\n".encode())
        answer = _reply(sock)
        if not answer.startswith(b"235"):
            raise RuntimeError(f"AUTH for {user}: {answer!r}")
        sock.sendall(b"QUIT\r\n")
        _reply(sock)


def run_load(port: int, users: list[str], count: int, clients: int) -> float:
    """Seconds for ``count`` logins over ``clients`` threads."""
    per = [users[i % len(users)] for i in range(count)]
    chunks = [per[i::clients] for i in range(clients)]
    errors: list[BaseException] = []

    def work(chunk: list[str]) -> None:
        try:
            for user in chunk:
                auth_once(port, user)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(c,)) for c in chunks]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--qtoaster",
        action="append",
        required=True,
        metavar="NAME=PATH",
        help="a qtoaster binary to measure (give two: before=..., after=...)",
    )
    parser.add_argument("--logins", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=2, help="ABBA rounds")
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/qtoaster-auth-bench"))
    parser.add_argument("--port", type=int, default=10027)
    args = parser.parse_args()
    sides = [tuple(item.split("=", 1)) for item in args.qtoaster]
    users = [f"auth{i:02d}@{DOMAIN}" for i in range(20)]
    results: dict[str, dict[str, list[float]]] = {
        n: {"seq": [], "par": [], "cpu": []} for n, _ in sides
    }
    order = []
    for r in range(args.repeat):
        order += sides if r % 2 == 0 else list(reversed(sides))
    for name, binary in order:
        work = args.workdir / name
        work.mkdir(parents=True, exist_ok=True)
        server = AuthQtoaster(work, port=args.port, qtoaster=Path(binary), name=name)
        server.configure_users(users)
        server.start()
        try:
            run_load(args.port, users, len(users), 4)  # warm-up: every user once
            cpu0 = tree_cpu(server.master_pid())
            seq = run_load(args.port, users, args.logins, 1)
            par = run_load(args.port, users, args.logins, args.clients)
            cpu = tree_cpu(server.master_pid()) - cpu0
        finally:
            server.stop()
        results[name]["seq"].append(args.logins / seq)
        results[name]["par"].append(args.logins / par)
        results[name]["cpu"].append(cpu * 1000 / (2 * args.logins))
        print(
            f"{name}: {args.logins / seq:.1f} logins/s in a row, "
            f"{args.logins / par:.1f} over {args.clients} clients, "
            f"{cpu * 1000 / (2 * args.logins):.1f} ms server CPU per login",
            flush=True,
        )
    print("median of the rounds:")
    base = sides[0][0]
    for name, _ in sides:
        row = {k: statistics.median(v) for k, v in results[name].items()}
        ratio = {k: row[k] / statistics.median(results[base][k]) for k in row}
        print(
            f"  {name}: {row['seq']:.1f}/s in a row ({ratio['seq']:.2f} of {base}), "
            f"{row['par']:.1f}/s parallel ({ratio['par']:.2f}), "
            f"{row['cpu']:.1f} ms CPU per login ({ratio['cpu']:.2f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
