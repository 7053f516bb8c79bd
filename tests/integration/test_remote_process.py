"""The remote delivery process (decision 0007): a child of the send role, not the send role.

Relays to loopback only: smtproutes points the test domain at a tarpit (a socket that
accepts and never greets, so deliveries stay in flight) or at a counting SmtpPeer.
"""

from __future__ import annotations

import os
import signal
import smtplib
import socket
from collections import Counter
from pathlib import Path

from tests.smtppeer import SmtpPeer

from .harness import Server, make_home, qt, wait_until


def _processes(home: Path, role: str) -> list[int]:
    """Pids of ``qtoaster serve ROLE --home HOME`` processes (from /proc/PID/cmdline)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in argv and role.encode() in argv and str(home).encode() in argv:
            found.append(int(entry))
    return found


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rpartition(")")[2].split()[1])


def _route(home: Path, port: int) -> None:
    (home / "control" / "smtproutes").write_text(f"far.test:127.0.0.1:{port}\n")


def test_remote_child_killed_mid_delivery_defers_restarts_and_delivers_once(
    tmp_path: Path,
) -> None:
    home = make_home(tmp_path)
    tarpit = socket.create_server(("127.0.0.1", 0), backlog=64)
    tarpit.settimeout(0.05)
    held: list[socket.socket] = []
    _route(home, tarpit.getsockname()[1])
    wanted = [f"r{i}@far.test" for i in range(5)]
    server = Server(home)
    try:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
            for i, rcpt in enumerate(wanted):
                client.sendmail("alice@example.test", [rcpt], f"Subject: {i}\r\n\r\nx\r\n")

        def all_in_flight() -> bool:
            try:
                held.append(tarpit.accept()[0])
            except TimeoutError:
                pass
            return len(held) >= len(wanted)

        wait_until(all_in_flight, 30, "every delivery connected to the tarpit")
        (send,) = _processes(home, "send")
        (remote,) = _processes(home, "remote")
        assert remote != send and _parent(remote) == send

        with SmtpPeer("127.0.0.1") as peer:
            _route(home, peer.port)
            os.kill(remote, signal.SIGKILL)
            log = home / "server.log"
            wait_until(
                lambda: "5 deliveries in flight deferred" in log.read_text(errors="replace"),
                30,
                "the deferral logged",
            )
            assert not peer.messages  # nothing was recorded for the dead child's deliveries
            qt(home, "queue", "retry", "--all")
            peer.wait_for(len(wanted), 60)
            wait_until(lambda: b"messages in queue: 0\n" in qt(home, "queue", "stat").stdout, 30)
            got = Counter(r for m in peer.messages for r in m.recipients)
            assert got == Counter(wanted)  # each exactly once
        (again,) = _processes(home, "remote")
        (send_now,) = _processes(home, "send")
        # Unprivileged, send starts a new child itself; under root it cannot start one as
        # the remote user, so it stops and the supervisor starts send (and so a child) again.
        assert send_now == send if os.geteuid() != 0 else send_now != send
        assert again not in (remote, send) and _parent(again) == send_now
        # At shutdown the send role closes the channel and waits for its child to exit.
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(45) == 0
        assert not Path(f"/proc/{again}").exists()
    finally:
        for conn in held:
            conn.close()
        tarpit.close()
        server.stop()
