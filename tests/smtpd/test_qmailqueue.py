"""QMAILQUEUE: real programs (shell scripts written here) run as qmail-queue (spec 13)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from qtoaster.core.envelope import Envelope
from qtoaster.core.reply import Reply
from qtoaster.queue.store import QueueStore
from qtoaster.smtpd.qmailqueue import QueueOutcome, accepted_reply, run_qmailqueue

SPOOL_HEAD = b"spool header the child must not see\n"
MESSAGE = b"Received: from x by y\nSubject: hi\n\nbody line\n"
ENVELOPE = Envelope("joe@example.com", ("a@example.org", "b@example.net"))
ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TCPREMOTEIP": "192.0.2.7"}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    path = tmp_path / "spool"
    path.write_bytes(SPOOL_HEAD + MESSAGE)
    return path


def script(directory: Path, name: str, body: str, mode: int = 0o755) -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(mode)
    return path


async def run(
    program: str | Path,
    home: Path,
    spool: Path,
    envelope: Envelope = ENVELOPE,
    timeout: float = 20.0,
) -> QueueOutcome:
    return await run_qmailqueue(
        str(program), ENV, spool, len(SPOOL_HEAD), envelope, home=home, timeout=timeout
    )


# Reads both descriptors completely, as qmail-queue does, so the envelope write never races.
CAPTURE = (
    'cat > "$OUT/message" && cat <&1 > "$OUT/envelope" && env > "$OUT/env" && pwd > "$OUT/pwd"'
)


async def test_exit_0_is_queued_and_child_sees_message_envelope_env(
    tmp_path: Path, home: Path, spool: Path
) -> None:
    program = script(tmp_path, "capture", f'OUT="{tmp_path}"\n{CAPTURE}')
    outcome = await run(program, home, spool)
    assert outcome.queued and outcome.reply is None and outcome.pid is not None
    assert (tmp_path / "message").read_bytes() == MESSAGE
    assert (
        tmp_path / "envelope"
    ).read_bytes() == b"Fjoe@example.com\0Ta@example.org\0Tb@example.net\0\0"
    env = dict(line.split("=", 1) for line in (tmp_path / "env").read_text().splitlines())
    assert env["QTOASTER_HOME"] == str(home)
    assert env["TCPREMOTEIP"] == "192.0.2.7"
    assert (tmp_path / "pwd").read_text().strip() == str(home)  # qmail runs in its home


def test_accepted_reply_is_qmails() -> None:
    assert accepted_reply(4242, 812090814.7) == Reply(250, "ok 812090814 qp 4242")


async def test_null_sender_and_large_envelope_beyond_the_pipe_buffer(
    tmp_path: Path, home: Path, spool: Path
) -> None:
    program = script(tmp_path, "capture", f'OUT="{tmp_path}"\n{CAPTURE}')
    recipients = tuple(f"{'r' * 900}{i}@example.org" for i in range(200))  # ~180 KB
    outcome = await run(program, home, spool, Envelope("", recipients))
    assert outcome.queued
    assert (tmp_path / "envelope").read_bytes() == Envelope("", recipients).to_qmail()


@pytest.mark.parametrize(
    ("code", "reply"),
    [
        (31, Reply(554, "mail server permanently rejected message (#5.3.0)")),
        (71, Reply(451, "mail server temporarily rejected message (#4.3.0)")),
        (11, Reply(554, "envelope address too long for qq (#5.1.3)")),
        (99, Reply(451, "qq temporary problem (#4.3.0)")),
    ],
)
async def test_exit_codes_map_to_qmails_replies(
    tmp_path: Path, home: Path, spool: Path, code: int, reply: Reply
) -> None:
    outcome = await run(script(tmp_path, "qq", f"exit {code}"), home, spool)
    assert outcome.reply == reply and outcome.pid is not None


async def test_exit_0_without_reading_the_envelope_is_a_read_error(
    tmp_path: Path, home: Path, spool: Path
) -> None:
    # qmail_close: exit 0 after a failed write falls through to 54 (the envelope is larger
    # than the pipe buffer, so the write must fail once the child is gone).
    recipients = tuple(f"{'r' * 900}{i}@example.org" for i in range(200))
    outcome = await run(script(tmp_path, "qq", "exit 0"), home, spool, Envelope("a@b", recipients))
    assert outcome.reply == Reply(451, "qq read error (#4.3.0)")


async def test_crash_is_qq_crashed(tmp_path: Path, home: Path, spool: Path) -> None:
    outcome = await run(script(tmp_path, "qq", "kill -9 $$"), home, spool)
    assert outcome.reply == Reply(451, "qq crashed (#4.3.0)")


@pytest.mark.parametrize("exists", [True, False])
async def test_cannot_exec_is_120s_text(
    tmp_path: Path, home: Path, spool: Path, exists: bool
) -> None:
    program = tmp_path / "qq"
    if exists:
        script(tmp_path, "qq", "exit 0", mode=0o644)
    outcome = await run(program, home, spool)
    assert outcome == QueueOutcome(Reply(451, "unable to exec qq (#4.3.0)"), None)


async def test_relative_program_is_resolved_from_the_home(home: Path, spool: Path) -> None:
    (home / "bin").mkdir()
    script(home / "bin", "qq", "exit 31")
    outcome = await run("bin/qq", home, spool)
    assert outcome.reply is not None and outcome.reply.code == 554


def _gone(pid: int) -> bool:
    """Dead, or a zombie waiting for init to reap it."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


async def test_timeout_kills_the_program_and_what_it_started(
    tmp_path: Path, home: Path, spool: Path
) -> None:
    pidfile = tmp_path / "pid"
    program = script(tmp_path, "qq", f'sleep 60 & echo $! > "{pidfile}"; wait')
    started = time.monotonic()
    outcome = await run(program, home, spool, timeout=0.5)
    assert outcome.reply == Reply(451, "qq timeout (#4.3.0)")
    assert time.monotonic() - started < 10
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while not _gone(grandchild) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert _gone(grandchild)


async def test_cancellation_kills_the_program(tmp_path: Path, home: Path, spool: Path) -> None:
    pidfile = tmp_path / "pid"
    program = script(tmp_path, "qq", f'echo $$ > "{pidfile}"; exec sleep 60')
    task = asyncio.create_task(run(program, home, spool, timeout=60))
    deadline = time.monotonic() + 10
    while not (pidfile.exists() and pidfile.read_text().strip()):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _gone(int(pidfile.read_text()))


async def test_open_file_object_is_flushed_and_read_from_offset(tmp_path: Path, home: Path) -> None:
    program = script(tmp_path, "capture", f'OUT="{tmp_path}"\n{CAPTURE}')
    path = tmp_path / "spool-stream"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb", buffering=65536) as stream:  # write-only, like the smtpd spool
        stream.write(SPOOL_HEAD + MESSAGE)  # still in the buffer
        outcome = await run_qmailqueue(
            str(program), ENV, stream, len(SPOOL_HEAD), ENVELOPE, home=home, timeout=20
        )
        stream.write(b"more")  # the caller's own position was not disturbed
    assert outcome.queued
    assert (tmp_path / "message").read_bytes() == MESSAGE
    assert path.read_bytes() == SPOOL_HEAD + MESSAGE + b"more"


async def test_simscan_style_wrapper_queues_through_queue_inject(
    tmp_path: Path, home: Path, spool: Path
) -> None:
    QueueStore.create(home / "queue")
    # Reads nothing itself: qmail-queue's descriptors go straight to queue-inject.
    program = script(tmp_path, "simscan", f'exec "{sys.executable}" -m qtoaster queue-inject')
    outcome = await run(program, home, spool, timeout=60)
    assert outcome.queued, outcome
    store = QueueStore(home / "queue")
    (qid,) = store.ids()
    queued = store.load(qid)
    assert queued.envelope == ENVELOPE
    body = queued.path.read_bytes()[queued.body_offset :]
    assert body.startswith(b"Received: (qmail ")  # queue-inject's own line, as qmail-queue's
    assert body.endswith(MESSAGE)


async def test_wrapper_with_queue_inject_reports_a_missing_queue(
    tmp_path: Path, home: Path, spool: Path
) -> None:
    program = script(tmp_path, "simscan", f'exec "{sys.executable}" -m qtoaster queue-inject')
    outcome = await run(program, home, spool, timeout=60)
    assert outcome.reply == Reply(451, "qq trouble in home directory (#4.3.0)")


async def test_no_descriptor_is_left_open(tmp_path: Path, home: Path, spool: Path) -> None:
    ok = script(tmp_path, "ok", f'OUT="{tmp_path}"\n{CAPTURE}')
    programs = [ok, script(tmp_path, "no", "exit 31"), tmp_path / "missing"]
    await run(ok, home, spool)  # let the loop create its own descriptors first
    before = sorted(os.listdir("/proc/self/fd"))
    for program in programs:
        await run(program, home, spool)
    await run(script(tmp_path, "slow", "exec sleep 60"), home, spool, timeout=0.2)
    assert sorted(os.listdir("/proc/self/fd")) == before
