"""``qtoaster queue-inject`` as a real process: message on fd 0, envelope on fd 1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from qtoaster.core.envelope import Envelope
from qtoaster.queue.store import QueueStore


@pytest.fixture
def home(tmp_path: Path) -> Path:
    root = tmp_path / "home"
    root.mkdir()
    QueueStore.create(root / "queue")
    return root


def inject(home: Path, message: bytes, envelope: bytes) -> int:
    """Run queue-inject with pipes on fd 0 and fd 1, written the way qmail.c writes them."""
    env_read, env_write = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "qtoaster", "queue-inject", "--home", str(home)],
        stdin=subprocess.PIPE,
        stdout=env_read,
        stderr=subprocess.PIPE,
    )
    os.close(env_read)
    try:
        assert proc.stdin is not None
        try:
            proc.stdin.write(message)
            proc.stdin.close()
            os.write(env_write, envelope)
        except BrokenPipeError:
            pass
    finally:
        os.close(env_write)
    proc.wait(timeout=60)
    assert proc.stderr is not None
    proc.stderr.close()
    return proc.returncode


def test_queues_a_message(home: Path) -> None:
    body = b"Subject: hello\n\n" + b"x" * 200_000 + b"\n"  # larger than a pipe buffer
    assert inject(home, body, b"Falice@example.org\0Tbob@example.com\0Tcarol\0\0") == 0
    store = QueueStore(home / "queue")
    (qid,) = store.ids()
    msg = store.load(qid)
    assert msg.envelope == Envelope("alice@example.org", ("bob@example.com", "carol"))
    assert msg.origin == f"inject uid {os.getuid()}"
    data = msg.path.read_bytes()[msg.body_offset :]
    first, rest = data.split(b"\n", 1)
    assert (
        first.startswith(b"Received: (qmail ")
        and f"invoked by uid {os.getuid()}); ".encode() in first
    )
    assert rest == body
    assert list((home / "queue" / "tmp").iterdir()) == []


@pytest.mark.parametrize(
    ("envelope", "code"),
    [
        (b"Xalice\0\0", 91),
        (b"Fa\0Fb\0\0", 91),
        (b"F" + b"a" * 1000 + b"\0Tb\0\0", 11),
        (b"Fa\0T" + b"b" * 1200 + b"\0\0", 11),
        (b"Fa\0Tb\0", 54),  # cut short: qmail-queue's read error
        # issue 12 item 6: CR or LF in an address would end a header line once the
        # address is written into Return-Path or Delivered-To: a bad envelope.
        (b"Fa\rX-Injected: x@x.test\0Tb\0\0", 91),
        (b"Fa\0Tb\nX-Injected: x@x.test\0\0", 91),
        (b"Fa\0Tb@c\0Td\r\0\0", 91),
    ],
)
def test_envelope_errors(home: Path, envelope: bytes, code: int) -> None:
    assert inject(home, b"Subject: x\n\nbody\n", envelope) == code
    assert QueueStore(home / "queue").ids() == []
    assert list((home / "queue" / "tmp").iterdir()) == []


def test_no_queue_is_home_error(tmp_path: Path) -> None:
    assert inject(tmp_path, b"x\n", b"Fa\0Tb\0\0") == 61
