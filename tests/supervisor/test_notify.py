"""supervisor.notify: sd_notify datagrams to a socket the test binds (path and abstract)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from qtoaster.supervisor.notify import VARIABLE, Notifier, monotonic_usec, socket_address


def _listener(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    return sock


def test_addresses() -> None:
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@abstract/name") == "\0abstract/name"
    assert socket_address("@") is None
    assert socket_address("relative") is None
    assert socket_address("vsock:2:1234") is None
    assert socket_address("") is None


@given(st.text())
def test_any_value_is_an_address_or_none(value: str) -> None:
    address = socket_address(value)
    assert address is None or address.startswith(("/", "\0"))


def test_path_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with _listener(path) as sock:
        env = {VARIABLE: path, "OTHER": "x"}
        notifier = Notifier.from_environment(env)
        assert env == {"OTHER": "x"}  # not passed on to the roles
        assert notifier.ready("serving smtp 127.0.0.1:25")
        assert sock.recv(4096) == b"READY=1\nSTATUS=serving smtp 127.0.0.1:25"
        before = monotonic_usec()
        assert notifier.reloading()
        reloading, stamp = sock.recv(4096).decode().split("\n")
        assert reloading == "RELOADING=1"
        assert stamp.startswith("MONOTONIC_USEC=")
        assert before <= int(stamp.split("=")[1]) <= monotonic_usec()
        assert notifier.stopping()
        assert sock.recv(4096) == b"STOPPING=1"


def test_abstract_socket() -> None:
    name = f"qtoaster-test-notify-{os.getpid()}"
    with _listener("\0" + name) as sock:
        assert Notifier.from_environment({VARIABLE: "@" + name}).ready()
        assert sock.recv(4096) == b"READY=1"


def test_without_systemd_nothing_happens() -> None:
    notifier = Notifier.from_environment({})
    assert notifier.address is None
    assert not notifier.ready()


def test_a_missing_socket_is_logged_not_raised(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "gone"))
    assert not notifier.ready()
    assert not notifier.stopping()


def test_keep_variable_when_asked() -> None:
    env = {VARIABLE: "/run/x"}
    assert Notifier.from_environment(env, unset=False).address == "/run/x"
    assert env == {VARIABLE: "/run/x"}
