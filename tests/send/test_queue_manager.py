"""QueueManager with a FakeClock and a fake local agent (no mocks of the filesystem)."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from qtoaster.config.control import Controls
from qtoaster.core.clock import FakeClock
from qtoaster.core.envelope import Envelope
from qtoaster.core.errors import TemporaryFailure
from qtoaster.core.outcome import Outcome, Result
from qtoaster.queue import state
from qtoaster.queue.schedule import TOO_LONG
from qtoaster.queue.store import QueueStore, commit_message
from qtoaster.send.loader import rewrite
from qtoaster.send.manager import QueueManager

BIRTH = 1_700_000_000.0


@dataclass
class FakeAgent:
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    calls: list[tuple[str, str, bytes]] = field(default_factory=list)

    def is_local(self, recipient: str) -> bool:
        return recipient.rpartition("@")[2] in ("example.com", "mx.example.com")

    def deliver(self, message: Path, body_offset: int, sender: str, recipient: str) -> Result:
        with open(message, "rb") as f:
            f.seek(body_offset)
            self.calls.append((sender, recipient, f.read()))
        outcome = self.outcomes.get(recipient, Outcome.SUCCESS)
        report = {
            Outcome.SUCCESS: "did 0+0+1/",
            Outcome.TEMPORARY: "Temporary error on maildir delivery. (#4.3.0)",
            Outcome.PERMANENT: "Sorry, no mailbox here by that name. (#5.1.1)",
        }[outcome]
        return Result(outcome, report)


@dataclass(frozen=True)
class FakeConfig:
    controls: Controls


def make(
    tmp_path: Path, **controls: object
) -> tuple[QueueStore, FakeAgent, FakeClock, QueueManager]:
    clock = FakeClock(BIRTH)
    QueueStore.create(tmp_path / "queue")
    store = QueueStore(tmp_path / "queue", fsync=False, clock=clock)
    agent = FakeAgent()
    config = FakeConfig(Controls.for_me("mx.example.com", **controls))
    return store, agent, clock, QueueManager(store, config, agent, clock)


def queue(store: QueueStore, sender: str, *rcpts: str, body: bytes = b"Subject: t\n\nhi\n") -> str:
    return commit_message(store, Envelope(sender, rcpts), "test", [body])


def test_rewrite() -> None:
    assert rewrite("joe", "example.com", frozenset()) == "joe@example.com"
    assert rewrite("u%h@relay.example", "x", frozenset({"relay.example"})) == "u@h"
    assert rewrite("a%b%c@P.example", "x", frozenset({"p.example", "c"})) == "a@b"
    assert rewrite("u%h@other", "x", frozenset({"relay.example"})) == "u%h@other"


async def test_success_deletes_message(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store, agent, _, manager = make(tmp_path)
    caplog.set_level("INFO", logger="qtoaster.send")
    qid = queue(store, "alice@remote.example", "bob@example.com", "carol")
    try:
        await manager.run_once()
    finally:
        manager.close()
    # Recipients of one message are delivered in parallel: order is not defined.
    assert sorted(agent.calls) == [
        ("alice@remote.example", "bob@example.com", b"Subject: t\n\nhi\n"),
        ("alice@remote.example", "carol@mx.example.com", b"Subject: t\n\nhi\n"),
    ]
    assert store.ids() == [] and os.listdir(store.state) == []
    text = caplog.text
    assert f"new.msg msg={qid} size=" in text
    assert f"delivery msg={qid} to=bob@example.com channel=local result=success delay=" in text
    assert 'report="did 0+0+1/"' in text
    assert f"end.msg msg={qid}" in text


async def test_temporary_failure_retries_on_schedule(tmp_path: Path) -> None:
    store, agent, clock, manager = make(tmp_path)
    agent.outcomes["bob@example.com"] = Outcome.TEMPORARY
    qid = queue(store, "alice@remote.example", "bob@example.com", "dan@example.com")
    try:
        await manager.run_once()
        assert len(agent.calls) == 2
        assert state.read_state(store.state_path(qid)).delivered == {1}
        assert manager.jobs[qid].next_try == BIRTH + 100
        clock.advance(99)
        await manager.run_once()
        assert len(agent.calls) == 2  # not due yet
        clock.advance(1)
        await manager.run_once()
        assert [c[1] for c in agent.calls[2:]] == ["bob@example.com"]  # dan is done
        assert manager.jobs[qid].next_try == BIRTH + 400
        agent.outcomes.clear()
        clock.advance(300)
        await manager.run_once()
    finally:
        manager.close()
    assert store.ids() == []


async def test_restart_reads_state_and_does_not_redeliver(tmp_path: Path) -> None:
    store, agent, _, manager = make(tmp_path)
    agent.outcomes["bob@example.com"] = Outcome.TEMPORARY
    qid = queue(store, "alice@remote.example", "bob@example.com", "dan@example.com")
    try:
        await manager.run_once()
    finally:
        manager.close()
    _, agent2, _, manager2 = make(tmp_path)
    try:
        await manager2.run_once()  # a restart: everything is due at once
    finally:
        manager2.close()
    assert [c[1] for c in agent2.calls] == ["bob@example.com"]
    assert qid not in store.ids()


async def test_permanent_failure_bounces(tmp_path: Path) -> None:
    store, agent, _, manager = make(tmp_path)
    agent.outcomes["nobody@example.com"] = Outcome.PERMANENT
    qid = queue(store, "alice@remote.example", "nobody@example.com", "bob@example.com")
    try:
        await manager.run_once()
    finally:
        manager.close()
    ids = store.ids()
    assert qid not in ids and len(ids) == 1
    bounce = store.load(ids[0])
    assert bounce.envelope == Envelope("", ("alice@remote.example",))
    assert bounce.origin == "bounce"
    body = bounce.path.read_bytes()[bounce.body_offset :]
    lines = body.split(b"\n")
    assert lines[0].startswith(b"Received: (qmail ") and b" invoked for bounce); " in lines[0]
    assert lines[1] == b"Date: 14 Nov 2023 22:13:20 -0000"
    assert (
        b"<nobody@example.com>:\nSorry, no mailbox here by that name. (#5.1.1)\n\n"
        b"--- Below this line is a copy of the message.\n\n"
        b"Return-Path: <alice@remote.example>\nSubject: t\n\nhi\n"
    ) in body
    # the bounce goes to a remote sender: it stays queued, untouched
    assert len(agent.calls) == 2


async def test_lifetime_expiry_bounces(tmp_path: Path) -> None:
    store, agent, clock, manager = make(tmp_path, queuelifetime=1000)
    agent.outcomes["bob@example.com"] = Outcome.TEMPORARY
    qid = queue(store, "alice@remote.example", "bob@example.com")
    try:
        await manager.run_once()
        assert qid in store.ids()
        clock.advance(1001)
        await manager.run_once()
    finally:
        manager.close()
    assert qid not in store.ids()
    (bounce_id,) = store.ids()
    bounce = store.load(bounce_id)
    body = bounce.path.read_bytes()[bounce.body_offset :]
    assert (
        b"<bob@example.com>:\nTemporary error on maildir delivery. (#4.3.0)\n"
        + TOO_LONG.encode()
        + b"\n--- Below"
    ) in body


async def test_double_bounce_and_triple_bounce(tmp_path: Path) -> None:
    store, agent, _, manager = make(tmp_path, doublebounceto="postmaster")
    agent.outcomes["nobody@example.com"] = Outcome.PERMANENT
    agent.outcomes["postmaster@mx.example.com"] = Outcome.PERMANENT
    queue(store, "", "nobody@example.com")
    try:
        await manager.run_once()  # bounce fails -> double bounce to postmaster@me
        (double,) = store.ids()
        assert store.load(double).envelope == Envelope("#@[]", ("postmaster@mx.example.com",))
        await manager.run_once()  # the double bounce fails too -> discarded
    finally:
        manager.close()
    assert store.ids() == []


async def test_remote_recipients_stay(tmp_path: Path) -> None:
    store, agent, _, manager = make(tmp_path)
    qid = queue(store, "alice@example.com", "bob@example.com", "far@remote.example")
    try:
        await manager.run_once()
        await manager.run_once()
    finally:
        manager.close()
    assert [c[1] for c in agent.calls] == ["bob@example.com"]
    assert store.ids() == [qid]
    assert state.read_state(store.state_path(qid)).delivered == {0}


async def test_unreadable_message_moved_to_bad(tmp_path: Path) -> None:
    store, agent, _, manager = make(tmp_path)
    qid = queue(store, "a@example.com", "bob@example.com")
    (store.state / qid).write_bytes(b"nonsense\n")
    try:
        await manager.run_once()
    finally:
        manager.close()
    assert store.ids() == [] and agent.calls == []
    assert sorted(os.listdir(store.bad)) == [qid, f"{qid}.state"]


async def test_agent_crash_is_a_deferral(tmp_path: Path) -> None:
    store, agent, _, manager = make(tmp_path)

    def boom(message: Path, body_offset: int, sender: str, recipient: str) -> Result:
        raise RuntimeError("bug")

    agent.deliver = boom  # type: ignore[method-assign]
    qid = queue(store, "a@example.com", "bob@example.com")
    try:
        await manager.run_once()
    finally:
        manager.close()
    assert store.ids() == [qid]


async def test_run_picks_up_triggered_messages_and_stops(tmp_path: Path) -> None:
    store, agent, _, manager = make(tmp_path)
    stop = asyncio.Event()
    runner = asyncio.create_task(manager.run(stop, rescan=3600))
    try:
        async with asyncio.timeout(10):
            await manager.ready.wait()
            await asyncio.to_thread(queue, store, "a@example.com", "bob@example.com")
            while store.ids():  # polled under the deadline above
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await runner
    assert [c[1] for c in agent.calls] == ["bob@example.com"]


async def test_message_committed_during_the_start_scan_is_delivered_at_once(
    tmp_path: Path,
) -> None:
    # Issue 12: after a restart, messages that smtpd committed while the manager ran its
    # first scan waited for the next periodic rescan (30 s): the trigger FIFO was opened
    # only after that scan, so their notification was lost.
    store, agent, _, manager = make(tmp_path)
    early = queue(store, "a@example.com", "bob@example.com")
    late: list[str] = []
    read = manager._reader.read

    def read_then_commit(names: list[str] | None, known: object) -> list[object]:
        jobs = read(names, known)  # type: ignore[arg-type]
        if not late:  # smtpd commits right after the scan listed mess/
            late.append(queue(store, "a@example.com", "carol@example.com"))
        return jobs  # type: ignore[return-value]

    manager._reader.read = read_then_commit  # type: ignore[method-assign]
    stop = asyncio.Event()
    runner = asyncio.create_task(manager.run(stop, rescan=3600))
    try:
        async with asyncio.timeout(10):
            while store.ids():  # polled under the deadline above
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await runner
    assert early and late
    assert sorted(c[1] for c in agent.calls) == ["bob@example.com", "carol@example.com"]


async def test_waiting_messages_cost_nothing_per_wake_up(tmp_path: Path) -> None:
    """Remote-only messages wait outside the due heap; deferred ones wait for their time."""
    store, agent, clock, manager = make(tmp_path)
    agent.outcomes["later@example.com"] = Outcome.TEMPORARY
    for i in range(200):
        queue(store, "a@remote.example", f"r{i}@far.example")
    deferred = queue(store, "a@remote.example", "later@example.com")
    try:
        await manager.run_once()
        assert len(manager.jobs) == 201
        assert [qid for _, qid in manager.scheduler._due] == [deferred]  # only what can become due
        calls = len(agent.calls)
        clock.advance(50)  # before the first retry (birth + 100 s)
        await manager.run_once()
        assert len(agent.calls) == calls
        clock.advance(60)
        await manager.run_once()
        assert len(agent.calls) == calls + 1
    finally:
        manager.close()


class DownAgent(FakeAgent):
    """The directory is unreachable: routing itself fails temporarily."""

    def is_local(self, recipient: str) -> bool:
        raise TemporaryFailure("directory database error: connection refused")


async def test_directory_down_leaves_the_message_queued(tmp_path: Path) -> None:
    clock = FakeClock(BIRTH)
    QueueStore.create(tmp_path / "queue")
    store = QueueStore(tmp_path / "queue", fsync=False, clock=clock)
    agent = DownAgent()
    config = FakeConfig(Controls.for_me("mx.example.com"))
    manager = QueueManager(store, config, agent, clock)
    qid = queue(store, "alice@remote.example", "bob@example.com")
    try:
        await manager.run_once()
    finally:
        manager.close()
    assert agent.calls == [] and store.ids() == [qid]


async def test_a_backup_pause_stops_deliveries_until_released(tmp_path: Path) -> None:
    """queue/pause.py: while a live request is held nothing is delivered (mail is still
    committed), the answer names the request's token, and the release resumes."""
    from qtoaster.queue.pause import WORD, PauseRequest, PauseWatch

    clock = FakeClock(BIRTH)
    QueueStore.create(tmp_path / "queue")
    store = QueueStore(tmp_path / "queue", fsync=False, clock=clock)
    agent = FakeAgent()
    config = FakeConfig(Controls.for_me("mx.example.com"))
    watch = PauseWatch(tmp_path / "run", store.path)
    manager = QueueManager(store, config, agent, clock, pause=watch)
    request = PauseRequest(tmp_path / "run", store.path)
    stop = asyncio.Event()
    runner = asyncio.create_task(manager.run(stop, rescan=3600))
    try:
        async with asyncio.timeout(10):
            await manager.ready.wait()
            request.hold()
            store.notify(WORD)
            while not request.honoured():  # polled under the deadline above
                await asyncio.sleep(0.01)
            qid = await asyncio.to_thread(queue, store, "a@example.com", "bob@example.com")
            while qid not in manager.jobs:  # scanned: the same loop pass then launches
                await asyncio.sleep(0.01)  # nothing, as it is paused
            assert not manager.jobs[qid].busy
            assert store.ids() == [qid] and agent.calls == []
            request.release()
            store.notify(WORD)
            while store.ids():  # polled under the deadline above
                await asyncio.sleep(0.01)
    finally:
        request.release()
        stop.set()
        async with asyncio.timeout(10):
            await runner
    assert [c[1] for c in agent.calls] == ["bob@example.com"]
    assert not (store.path / "paused").exists()
