"""Open N idle SMTP/POP3 connections (plain or implicit TLS) on loopback and report memory.

Method: raise RLIMIT_NOFILE, sum VmRSS and Pss of the server's process tree (the root pid and
all its descendants, found through /proc/PID/stat), then open N non-blocking TCP connections
(at most WINDOW connects in flight, so the listen backlog never overflows), wait until each
one has received its complete 220 greeting (polled with a deadline), sum the memory again,
and close every connection. Per-connection cost = (after - before) / greeted.

VmRSS counts shared pages (libraries, Python's heap before fork) once per process, so for
a one-process-per-connection server (Postfix smtpd) it overstates; Pss divides each shared
page among its sharers and is the fairer figure. Both are reported.

``--tls`` makes each connection an implicit-TLS session (SMTPS, POP3S): the handshake is
done without blocking, in the same selector loop, before the greeting is awaited;
``--greeting +OK`` waits for a POP3 greeting instead of SMTP's 220.

Invariants: one connection attempt per wanted connection plus at most N retries; the wait is
bounded by the deadline; every socket opened here is closed before ``measure`` returns.
"""

from __future__ import annotations

import argparse
import errno
import os
import resource
import selectors
import socket
import ssl
import sys
import time
from dataclasses import dataclass
from pathlib import Path

WINDOW = 256


@dataclass
class IdleMemory:
    requested: int
    greeted: int
    processes_before: int
    processes_after: int
    rss_before_kb: int
    rss_after_kb: int
    pss_before_kb: int
    pss_after_kb: int
    seconds: float  # to open all connections and receive every greeting

    def per_connection_kb(self, before: int, after: int) -> float:
        return (after - before) / self.greeted if self.greeted else 0.0

    def summary(self) -> str:
        rss = self.per_connection_kb(self.rss_before_kb, self.rss_after_kb)
        pss = self.per_connection_kb(self.pss_before_kb, self.pss_after_kb)
        return (
            f"{self.greeted}/{self.requested} idle conns in {self.seconds:.1f}s: "
            f"{self.processes_after} procs, RSS {self.rss_after_kb / 1024:.1f} MiB "
            f"(idle {self.rss_before_kb / 1024:.1f}), PSS {self.pss_after_kb / 1024:.1f} MiB "
            f"(idle {self.pss_before_kb / 1024:.1f}); per connection RSS {rss:.1f} KiB, "
            f"PSS {pss:.1f} KiB"
        )


def raise_nofile(wanted: int) -> None:
    """Soft (and, as root, hard) RLIMIT_NOFILE to at least ``wanted``, if allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return
        except (ValueError, OSError):
            wanted = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def tree_pids(root: int) -> list[int]:
    """``root`` and all its descendants, from the ppid field of /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        # The command name is in parentheses and may hold spaces: split after the last ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _field_kb(path: Path, name: str) -> int:
    try:
        for line in path.read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_memory(root: int) -> tuple[int, int, int]:
    """(process count, summed VmRSS KiB, summed Pss KiB) of the tree under ``root``."""
    pids = tree_pids(root)
    rss = sum(_field_kb(Path(f"/proc/{pid}/status"), "VmRSS") for pid in pids)
    pss = sum(_field_kb(Path(f"/proc/{pid}/smaps_rollup"), "Pss") for pid in pids)
    return len(pids), rss, pss


def _connect(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    code = sock.connect_ex((host, port))
    if code not in (0, errno.EINPROGRESS):
        sock.close()
        raise OSError(code, os.strerror(code))
    return sock


def _greeted(buffer: bytes, greeting: bytes = b"220") -> bool | None:
    """True once a final greeting line is complete, False on another reply, None: wait."""
    if greeting != b"220":  # POP3: one line
        return buffer.startswith(greeting) if b"\r\n" in buffer else None
    for line in buffer.split(b"\r\n")[:-1]:
        if line.startswith(b"220 "):
            return True
        if not line.startswith(b"220-"):
            return False
    return None


def _tls_client() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the bench's own self-signed certificate, loopback
    return ctx


def open_idle(
    host: str,
    port: int,
    n: int,
    deadline: float,
    *,
    tls: ssl.SSLContext | None = None,
    greeting: bytes = b"220",
) -> tuple[list[socket.socket], int]:
    """Open up to ``n`` greeted connections before ``deadline``; returns (greeted, failures)."""
    selector = selectors.DefaultSelector()
    buffers: dict[socket.socket, bytes] = {}
    shaking: set[socket.socket] = set()  # TLS handshake not done yet
    greeted: list[socket.socket] = []
    failures = 0
    try:
        while len(greeted) < n and time.monotonic() < deadline and failures <= n:
            while len(buffers) < WINDOW and len(greeted) + len(buffers) < n:
                sock = _connect(host, port)
                if tls is not None:
                    sock = tls.wrap_socket(sock, do_handshake_on_connect=False)
                    shaking.add(sock)
                buffers[sock] = b""
                events = selectors.EVENT_READ | (selectors.EVENT_WRITE if tls else 0)
                selector.register(sock, events, data=sock)
            for key, _ in selector.select(timeout=0.1):
                sock = key.data
                if sock in shaking:
                    assert isinstance(sock, ssl.SSLSocket)
                    try:
                        sock.do_handshake()
                    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                        continue
                    except OSError as exc:
                        if exc.errno in (errno.ENOTCONN, errno.EINPROGRESS):
                            continue  # still connecting
                        shaking.discard(sock)
                        selector.unregister(sock)
                        del buffers[sock]
                        failures += 1
                        sock.close()
                        continue
                    shaking.discard(sock)
                    selector.modify(sock, selectors.EVENT_READ, data=sock)
                try:
                    data = sock.recv(4096)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    continue
                except OSError:
                    data = b""
                buffers[sock] += data
                verdict = _greeted(buffers[sock], greeting) if data else False
                if verdict is None:
                    continue
                selector.unregister(sock)
                shaking.discard(sock)
                del buffers[sock]
                if verdict:
                    greeted.append(sock)
                else:
                    failures += 1
                    sock.close()
    finally:
        for sock in buffers:
            selector.unregister(sock)
            sock.close()
        selector.close()
    return greeted, failures


def measure(
    host: str,
    port: int,
    root_pid: int,
    n: int,
    deadline_s: float,
    *,
    tls: bool = False,
    greeting: bytes = b"220",
) -> IdleMemory:
    raise_nofile(n + 256)
    procs_before, rss_before, pss_before = tree_memory(root_pid)
    start = time.monotonic()
    context = _tls_client() if tls else None
    greeted, _failures = open_idle(
        host, port, n, start + deadline_s, tls=context, greeting=greeting
    )
    seconds = time.monotonic() - start
    try:
        procs_after, rss_after, pss_after = tree_memory(root_pid)
    finally:
        for sock in greeted:
            sock.close()
    return IdleMemory(
        requested=n,
        greeted=len(greeted),
        processes_before=procs_before,
        processes_after=procs_after,
        rss_before_kb=rss_before,
        rss_after_kb=rss_after,
        pss_before_kb=pss_before,
        pss_after_kb=pss_after,
        seconds=seconds,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid", type=int, required=True, help="root of the server's tree")
    parser.add_argument("-n", type=int, default=1000, help="connections to open")
    parser.add_argument("--deadline", type=float, default=180.0, help="seconds")
    parser.add_argument("--tls", action="store_true", help="implicit TLS (SMTPS, POP3S)")
    parser.add_argument("--greeting", default="220", help="220 (SMTP) or +OK (POP3)")
    parser.add_argument(
        "--after", action="store_true", help="also report memory once every session closed"
    )
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        parser.error("loopback only")
    greeting = args.greeting.encode()
    result = measure(
        args.host, args.port, args.pid, args.n, args.deadline, tls=args.tls, greeting=greeting
    )
    print(result.summary())
    if args.after:
        # The server sees the closes over a few loop turns: poll, bounded, for the figure.
        end = time.monotonic() + 30
        while True:
            _, rss, pss = tree_memory(args.pid)
            if pss <= result.pss_before_kb * 1.2 or time.monotonic() > end:
                break
            time.sleep(0.5)
        print(f"after close: RSS {rss / 1024:.1f} MiB, PSS {pss / 1024:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())


def tree_cpu(root: int | None) -> float:
    """utime+stime+cutime+cstime summed over the live process tree of ``root``, in seconds
    (the children reaped so far are in their parents' cutime/cstime)."""
    total = 0
    for pid in tree_pids(root) if root else ():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])
    return total / os.sysconf("SC_CLK_TCK")
