"""Listeners are this server's alone (supervisor.runner.bind) and the home locks (core.lock)."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from qtoaster.config.settings import Listener, ListenerKind
from qtoaster.core.lock import SUPERVISOR, HomeLock, Locked
from qtoaster.supervisor.runner import ListenError, bind, listen_problem


def _listener(port: int, host: str = "127.0.0.1") -> Listener:
    return Listener(ListenerKind.SMTP, host, port)


def _reuseport_socket(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(5)
    return sock


def test_messages_name_the_address_and_the_fix() -> None:
    in_use = OSError(errno.EADDRINUSE, "Address already in use")
    assert listen_problem("127.0.0.1:2525", 2525, in_use) == (
        "cannot listen on 127.0.0.1:2525: address already in use (another server?)"
    )
    denied = listen_problem("[::1]:25", 25, OSError(errno.EACCES, "Permission denied"))
    assert denied.startswith("cannot listen on [::1]:25: permission denied: port 25 is below 1024")
    assert "run as root" in denied and "CAP_NET_BIND_SERVICE" in denied and ">= 1024" in denied


def test_port_taken_by_another_socket_is_refused() -> None:
    # Even one with SO_REUSEPORT, under our own uid: the probe has no SO_REUSEPORT.
    other = _reuseport_socket(0)
    port = other.getsockname()[1]
    with other, pytest.raises(ListenError, match=f"127.0.0.1:{port}: address already in use"):
        bind(_listener(port), 2)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give sockets their own owner")
def test_nobody_can_join_our_port_afterwards() -> None:
    ours = bind(_listener(0), 3)
    port = ours[0].getsockname()[1]
    try:
        assert {s.getsockname()[1] for s in ours} == {port}
        with pytest.raises(OSError) as caught:
            _reuseport_socket(port).close()
        assert caught.value.errno == errno.EADDRINUSE
        # ... and our own workers' sockets still share it: each gets connections.
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(60)]
        accepted = 0
        for sock in ours:
            sock.setblocking(False)
            while True:
                try:
                    conn, _ = sock.accept()
                except BlockingIOError:
                    break
                conn.close()
                accepted += 1
        for client in clients:
            client.close()
        assert accepted == 60
    finally:
        for sock in ours:
            sock.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may bind any port")
def test_low_port_without_privilege() -> None:
    with pytest.raises(ListenError, match="below 1024; run as root"):
        bind(_listener(25), 1)


def test_second_lock_names_home_and_pid(tmp_path: Path) -> None:
    first = HomeLock(tmp_path / "run", SUPERVISOR)
    first.acquire("qtoaster run")
    with pytest.raises(Locked) as caught:
        HomeLock(tmp_path / "run", SUPERVISOR).acquire("qtoaster run")
    assert str(caught.value) == f"qtoaster run is already running on {tmp_path} (pid {os.getpid()})"
    first.release()
    HomeLock(tmp_path / "run", SUPERVISOR).acquire("qtoaster run")


def test_kill_9_leaves_no_lock(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from qtoaster.core.lock import HomeLock;"
            f"HomeLock(Path({str(tmp_path / 'run')!r}), 'x').acquire('x'); print(flush=True);"
            "time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
    )
    assert holder.stdout is not None
    holder.stdout.readline()  # it holds the lock now
    assert HomeLock(tmp_path / "run", "x").held_elsewhere() == holder.pid
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    holder.stdout.close()
    assert HomeLock(tmp_path / "run", "x").held_elsewhere() is None
