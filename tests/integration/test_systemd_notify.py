"""``qtoaster run`` under systemd's eyes: sd_notify datagrams on $NOTIFY_SOCKET (a Unix
datagram socket this test binds), around start, a SIGHUP reload and shutdown."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest

from .harness import Server, make_home, role_child, wait_until


def _messages(sock: socket.socket) -> list[dict[str, str]]:
    fields = sock.recv(4096).decode().split("\n")
    return [dict(field.split("=", 1) for field in fields)]


def test_ready_reloading_stopping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = make_home(tmp_path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "notify"))
        sock.settimeout(30)
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
        server = Server(home, workers=1)
        try:
            [ready] = _messages(sock)
            assert ready["READY"] == "1"
            assert f"smtp 127.0.0.1:{server.port}" in ready["STATUS"]
            # The roles do not inherit the variable (only the supervisor speaks for the unit).
            send = role_child(server.proc.pid, "send")
            assert b"NOTIFY_SOCKET=" not in Path(f"/proc/{send}/environ").read_bytes()

            server.signal(signal.SIGHUP)
            [reloading] = _messages(sock)
            assert reloading["RELOADING"] == "1"
            assert int(reloading["MONOTONIC_USEC"]) > 0
            [again] = _messages(sock)
            assert again == {"READY": "1"}
            log = home / "server.log"
            wait_until(lambda: "reloaded" in log.read_text(), what="'reloaded' in the log")
            text = log.read_text()
            assert "send stopped for the reload (exit 0); starting it again" in text
            assert "exited with" not in text  # no role looked like it crashed
            assert role_child(server.proc.pid, "send") != send  # a fresh queue manager
        finally:
            assert server.stop() == 0
        [stopping] = _messages(sock)
        assert stopping == {"STOPPING": "1"}
