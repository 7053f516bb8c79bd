"""The http role's executor forked small (cli/adminfork.py): the first request after start,
a request after the burst's child left on idle, an over-long line, the channel's close."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qtoaster.cli.adminfork import requests, start_executor
from qtoaster.core.home import Home
from qtoaster.directory.store import create_directory
from qtoaster.httpd.channel import MAX_LINE

DEADLINE_S = 30.0


def children(pid: int) -> set[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(p) for p in text.split()}


def wait_for(condition: object, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {DEADLINE_S} s: {what}")
        time.sleep(0.02)  # polling with a deadline, not a wait for a fixed time


def ask(sock: socket.socket, reader: object, op: str, **args: object) -> dict[str, object]:
    sock.sendall(json.dumps({"op": op, "args": args}).encode() + b"\n")
    line = reader.readline()  # type: ignore[attr-defined]
    assert line, "the executor closed the channel"
    answer: dict[str, object] = json.loads(line)
    return answer


@pytest.fixture
def executor(tmp_path: Path) -> Iterator[tuple[socket.socket, object, int]]:
    home = Home(tmp_path / "home")
    create_directory(home)
    home.control.mkdir()
    before = children(os.getpid())
    sock = start_executor(home, idle=0.2)
    (pid,) = children(os.getpid()) - before
    with sock.makefile("rb") as reader:
        yield sock, reader, pid
    sock.close()
    try:
        os.waitpid(pid, 0)  # the channel closed: the executor ends
    except ChildProcessError:
        pass  # the test reaped it


def test_first_request_after_start_and_after_idle(
    executor: tuple[socket.socket, object, int],
) -> None:
    sock, reader, pid = executor
    assert children(pid) == set()  # idle: no child holds the CLI's operations yet
    status = {"domains": 0, "queue": {"messages": 0, "held": 0}}
    assert ask(sock, reader, "status") == {"ok": status}
    added = ask(sock, reader, "domain_add", name="example.test", postmaster_password="pw")
    assert added["ok"]["name"] == "example.test"  # type: ignore[index]
    wait_for(lambda: children(pid) == set(), "the burst's child exits when idle")
    assert ask(sock, reader, "domain_show", name="example.test")["ok"]["users"] == 1  # type: ignore[index]
    assert ask(sock, reader, "no_such_op")["status"] == 400


def test_closing_the_channel_ends_the_executor(
    executor: tuple[socket.socket, object, int],
) -> None:
    sock, reader, pid = executor
    assert "ok" in ask(sock, reader, "status")
    sock.shutdown(socket.SHUT_RDWR)
    _, status = os.waitpid(pid, 0)
    assert status == 0


def test_requests_split_lines_and_cut_an_over_long_one() -> None:
    mine, theirs = socket.socketpair()
    with mine, theirs:
        long = b"x" * (MAX_LINE + 10)
        data = b'{"op":"a"}\n{"op":' + b'"b"}\n' + long + b"\n" + b'{"op":"c"}\n'

        def send() -> None:
            theirs.sendall(data)
            theirs.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        lines = list(requests(mine, idle=5.0))
        sender.join(DEADLINE_S)
    assert lines == [b'{"op":"a"}\n', b'{"op":"b"}\n', long[:MAX_LINE], b'{"op":"c"}\n']


def test_requests_stop_when_idle_with_nothing_buffered() -> None:
    mine, theirs = socket.socketpair()
    with mine, theirs:
        theirs.sendall(b'{"op":"a"}\n')
        assert list(requests(mine, idle=0.05)) == [b'{"op":"a"}\n']
