"""The queue manager's remote channel, holds and operator retries, with a fake remote agent.

The agent is faked here (the real one is tested against real peers in
tests/integration/test_remote.py); the queue store, state files and schedule are real.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.send.test_queue_manager import BIRTH, FakeAgent, FakeConfig, queue

from qtoaster.config.control import Controls
from qtoaster.core.clock import FakeClock
from qtoaster.core.dsn import NO_DSN, EnvelopeDsn
from qtoaster.core.envelope import Envelope
from qtoaster.core.outcome import Outcome, Result
from qtoaster.queue import schedule, state
from qtoaster.queue.store import QueueStore, commit_message
from qtoaster.remote.body import Body
from qtoaster.send.manager import QueueManager
from qtoaster.send.remotelane import PAUSED


@dataclass(frozen=True)
class FakeAttempt:
    results: list[Result]
    reached: bool


@dataclass
class FakeRemote:
    outcome: dict[str, Outcome] = field(default_factory=dict)
    unreachable: set[str] = field(default_factory=set)
    calls: list[tuple[str, tuple[str, ...], bytes]] = field(default_factory=list)
    closed: bool = False
    requiretls: list[bool] = field(default_factory=list)  # per call
    smtputf8: list[bool] = field(default_factory=list)  # per call
    dsn: list[EnvelopeDsn] = field(default_factory=list)  # per call
    binarymime: list[bool] = field(default_factory=list)  # per call
    dsn_hop: bool = False  # the next hop offers DSN: successes are Result.dsn

    async def deliver(
        self,
        body: Body,
        sender: str,
        recipients: Sequence[str],
        domain: str,
        requiretls: bool = False,
        smtputf8: bool = False,
        dsn: EnvelopeDsn = NO_DSN,
        binarymime: bool = False,
    ) -> FakeAttempt:
        self.binarymime.append(binarymime)
        self.requiretls.append(requiretls)
        self.smtputf8.append(smtputf8)
        self.dsn.append(dsn)
        data = os.pread(body.fd, body.size, body.offset)
        self.calls.append((domain, tuple(recipients), data))
        if domain in self.unreachable:
            report = "Sorry, I wasn't able to establish an SMTP connection. (#4.4.1)"
            return FakeAttempt([Result(Outcome.TEMPORARY, report)] * len(recipients), False)
        results = []
        for rcpt in recipients:
            kind = self.outcome.get(rcpt, Outcome.SUCCESS)
            hop_dsn = self.dsn_hop and kind is Outcome.SUCCESS
            results.append(Result(kind, f"{kind.value} for {rcpt}", hop_dsn))
        return FakeAttempt(results, True)

    async def close(self) -> None:
        self.closed = True


def make(
    tmp_path: Path, **controls: object
) -> tuple[QueueStore, FakeRemote, FakeClock, QueueManager]:
    clock = FakeClock(BIRTH)
    QueueStore.create(tmp_path / "queue")
    store = QueueStore(tmp_path / "queue", fsync=False, clock=clock)
    remote = FakeRemote()
    config = FakeConfig(Controls.for_me("mx.example.com", **controls))
    return store, remote, clock, QueueManager(store, config, FakeAgent(), clock, remote)


async def run(manager: QueueManager) -> None:
    await manager.run_once()


async def test_one_call_per_domain_and_message_ends(tmp_path: Path) -> None:
    store, remote, _, manager = make(tmp_path)
    queue(store, "a@example.com", "x@far.example", "y@FAR.example", "z@other.example")
    try:
        await run(manager)
    finally:
        manager.close()
    calls = sorted((d, r) for d, r, _ in remote.calls)
    assert calls == [
        ("far.example", ("x@far.example", "y@FAR.example")),
        ("other.example", ("z@other.example",)),
    ]
    assert store.ids() == []


async def test_mixed_local_and_remote_with_bounce(tmp_path: Path) -> None:
    store, remote, _, manager = make(tmp_path)
    remote.outcome["bad@far.example"] = Outcome.PERMANENT
    queue(store, "a@somewhere.example", "bob@example.com", "bad@far.example", "ok@far.example")
    try:
        await run(manager)
        await run(manager)  # the bounce, to a remote sender, goes out too
    finally:
        manager.close()
    bounces = [c for c in remote.calls if c[0] == "somewhere.example"]
    assert len(bounces) == 1
    assert b"<bad@far.example>:\npermanent" not in bounces[0][2]  # report text is as given
    assert b"<bad@far.example>:\nfailure for bad@far.example\n" in bounces[0][2]
    assert store.ids() == []


async def test_temporary_keeps_remote_schedule(tmp_path: Path) -> None:
    store, remote, clock, manager = make(tmp_path)
    remote.outcome["slow@far.example"] = Outcome.TEMPORARY
    qid = queue(store, "a@example.com", "slow@far.example", "fast@far.example")
    try:
        await run(manager)
        job = manager.jobs[qid]
        assert job.pending_remote() == [0]
        assert (
            job.next_try == schedule.next_retry(BIRTH, BIRTH, schedule.REMOTE_SKIP) == BIRTH + 400
        )
        assert state.read_state(store.state_path(qid)).delivered == {1}
        clock.advance(399)
        await run(manager)
        assert len(remote.calls) == 1  # not due yet
        clock.advance(2)
        remote.outcome.clear()
        await run(manager)
        assert len(remote.calls) == 2 and remote.calls[1][1] == ("slow@far.example",)
    finally:
        manager.close()
    assert store.ids() == []


async def test_dying_message_turns_deferral_into_bounce(tmp_path: Path) -> None:
    store, remote, clock, manager = make(tmp_path, queuelifetime=100)
    remote.unreachable.add("dead.example")
    qid = queue(store, "a@example.com", "x@dead.example")
    try:
        await run(manager)
        assert qid in manager.jobs
        clock.advance(500)  # past the lifetime: the next attempt is the last
        await run(manager)
    finally:
        manager.close()
    assert qid not in store.ids()
    assert len([c for c in remote.calls if c[0] == "dead.example"]) == 2  # no pause skip


async def test_unreachable_domain_is_paused_for_other_messages(tmp_path: Path) -> None:
    store, remote, _clock, manager = make(tmp_path)
    remote.unreachable.add("dead.example")
    first = queue(store, "a@example.com", "x@dead.example")
    try:
        await run(manager)
        second = queue(store, "a@example.com", "y@dead.example")
        await run(manager)
        assert [c[1] for c in remote.calls] == [("x@dead.example",)]  # second not tried
        assert second in manager.jobs and first in manager.jobs
    finally:
        manager.close()
    assert PAUSED.format(domain="dead.example").startswith("Delivery to dead.example is paused")


async def test_hold_and_release_through_the_trigger(tmp_path: Path) -> None:
    store, remote, _, manager = make(tmp_path)
    qid = queue(store, "a@example.com", "x@far.example")
    store.hold(qid)
    try:
        await run(manager)
        assert remote.calls == [] and qid in manager.jobs
        store.release(qid)
        manager._trigger_word(f"~{qid}")
        await run(manager)
    finally:
        manager.close()
    assert len(remote.calls) == 1 and store.ids() == []


async def test_retry_now_ignores_schedule_and_pause(tmp_path: Path) -> None:
    store, remote, clock, manager = make(tmp_path)
    remote.unreachable.add("dead.example")
    qid = queue(store, "a@example.com", "x@dead.example")
    try:
        await run(manager)
        manager._trigger_word("!*")
        manager._retry_now(clock.time())
        await run(manager)
        assert len(remote.calls) == 2
        remote.unreachable.clear()
        manager._trigger_word(f"!{qid}")
        manager._retry_now(clock.time())
        await run(manager)
    finally:
        manager.close()
    assert store.ids() == [] and len(remote.calls) == 3


async def test_concurrencyremote_zero_holds_the_channel(tmp_path: Path) -> None:
    store, remote, _, manager = make(tmp_path, concurrencyremote=0)
    queue(store, "a@example.com", "x@far.example")
    try:
        await run(manager)
    finally:
        manager.close()
    assert remote.calls == [] and len(store.ids()) == 1


async def test_recover_drops_orphan_hold_marks(tmp_path: Path) -> None:
    store, _, _, manager = make(tmp_path)
    manager.close()
    qid = queue(store, "a@example.com", "x@far.example")
    store.hold(qid)
    store.delete(qid)
    store.recover()
    assert not os.path.exists(store.hold_dir / qid)


async def test_dsn_bounce_format(tmp_path: Path) -> None:
    import email
    from email import policy

    clock = FakeClock(BIRTH)
    QueueStore.create(tmp_path / "queue")
    store = QueueStore(tmp_path / "queue", fsync=False, clock=clock)
    remote = FakeRemote()
    remote.outcome["gone@far.example"] = Outcome.PERMANENT
    config = FakeConfig(Controls.for_me("mx.example.com"))
    manager = QueueManager(store, config, FakeAgent(), clock, remote, dsn=True)
    queue(store, "a@example.com", "gone@far.example")
    try:
        await run(manager)  # the failure: a bounce to a@example.com is queued...
        agent = manager.agent
        await run(manager)  # ...and delivered locally
    finally:
        manager.close()
    assert isinstance(agent, FakeAgent)
    (_, rcpt, data) = agent.calls[-1]
    assert rcpt == "a@example.com"
    message = email.message_from_bytes(data.split(b"\n", 1)[1], policy=policy.default)
    assert message.get_content_type() == "multipart/report"
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == [
        "text/plain",
        "message/delivery-status",
        "message/rfc822",
    ]
    assert b"Final-Recipient: rfc822; gone@far.example" in data


async def test_a_held_remote_channel_does_not_hold_local_recipients(tmp_path: Path) -> None:
    store, remote, _, manager = make(tmp_path, concurrencyremote=0)
    qid = queue(store, "a@example.com", "bob@example.com", "x@far.example")
    try:
        await run(manager)
        agent = manager.agent
        assert isinstance(agent, FakeAgent)
        assert [c[1] for c in agent.calls] == ["bob@example.com"]  # local went out
        assert remote.calls == [] and qid in manager.jobs  # remote waits for the channel
        assert manager.jobs[qid].next_try > BIRTH  # no tight loop on the held channel
    finally:
        manager.close()


async def test_requiretls_origin_flag_reaches_the_agent(tmp_path: Path) -> None:
    """smtpd's ``requiretls`` origin flag (RFC 8689) is passed on; a bounce has none."""
    store, remote, _, manager = make(tmp_path)
    remote.outcome["bad@far.example"] = Outcome.PERMANENT
    commit_message(
        store,
        Envelope("a@somewhere.example", ("bad@far.example",)),
        "smtp 192.0.2.1 requiretls",
        [b"Subject: t\n\nsecret\n"],
    )
    queue(store, "a@example.com", "plain@far.example")
    try:
        await run(manager)
        await run(manager)  # the bounce of the REQUIRETLS message goes out without it
    finally:
        manager.close()
    flags = {(d, r): f for (d, r, _), f in zip(remote.calls, remote.requiretls, strict=True)}
    assert flags == {
        ("far.example", ("bad@far.example",)): True,
        ("far.example", ("plain@far.example",)): False,
        ("somewhere.example", ("a@somewhere.example",)): False,
    }


async def test_binarymime_origin_flag_reaches_the_agent(tmp_path: Path) -> None:
    """RFC 3030 3: a BODY=BINARYMIME message goes to the agent with its flag (it sends by
    BDAT, or fails with #5.6.3 when the next hop lacks BINARYMIME); the others without."""
    store, remote, _, manager = make(tmp_path)
    commit_message(
        store,
        Envelope("a@somewhere.example", ("bin@far.example",)),
        "smtp 192.0.2.1 binarymime",
        [b"Subject: t\n\n\x00\xff\n"],
    )
    try:
        await run(manager)
        await run(manager)
    finally:
        manager.close()
    assert [(d, r) for d, r, _ in remote.calls] == [("far.example", ("bin@far.example",))]
    assert remote.binarymime == [True]
    assert remote.calls[0][2].endswith(b"Subject: t\n\n\x00\xff\n")
    assert store.ids() == []


async def test_smtputf8_origin_flag_reaches_the_agent_and_its_bounce(tmp_path: Path) -> None:
    """smtpd's ``smtputf8`` origin flag (RFC 6531) is passed on, and the bounce of such a
    message is flagged too (``bounce smtputf8``); U-label domains are grouped as A-labels."""
    store, remote, _, manager = make(tmp_path)
    remote.outcome["bad@bücher.example"] = Outcome.PERMANENT
    commit_message(
        store,
        Envelope("a@somewhere.example", ("bad@bücher.example",)),
        "smtp 192.0.2.1 smtputf8",
        ["Subject: Grüße\n\nx\n".encode()],
    )
    queue(store, "a@example.com", "plain@far.example")
    try:
        await run(manager)
        await run(manager)
    finally:
        manager.close()
    flags = {(d, r): f for (d, r, _), f in zip(remote.calls, remote.smtputf8, strict=True)}
    assert flags == {
        ("xn--bcher-kva.example", ("bad@bücher.example",)): True,
        ("far.example", ("plain@far.example",)): False,
        ("somewhere.example", ("a@somewhere.example",)): True,  # the bounce: "bounce smtputf8"
    }


def test_bounce_origin_flags() -> None:
    from qtoaster.queue.origin import bounce_origin, origin_flags, trusted

    assert bounce_origin("smtp 192.0.2.1 smtputf8", ["a@b.example"]) == "bounce smtputf8"
    assert bounce_origin("smtp 192.0.2.1", ["jörg@b.example"]) == "bounce smtputf8"
    assert bounce_origin("smtp 192.0.2.1 relay", ["a@bücher.example"]) == "bounce"
    assert origin_flags("bounce smtputf8") == {"smtputf8"}
    assert trusted("bounce smtputf8") and origin_flags("bounce") == frozenset()


async def test_dsn_request_goes_to_the_agent_by_position_in_each_group(tmp_path: Path) -> None:
    """RFC 3461 5.2: each domain's call carries MAIL's DSN parameters and its recipients'
    NOTIFY/ORCPT, renumbered by their place in that call."""
    from qtoaster.core.dsn import MailDsn, RcptDsn

    store, remote, _, manager = make(tmp_path)
    never = RcptDsn(frozenset({"NEVER"}))
    orcpt = RcptDsn(None, "rfc822;z+40other.example")
    dsn = EnvelopeDsn(MailDsn("HDRS", "E1"), {1: never, 2: orcpt})
    rcpts = ("x@far.example", "y@far.example", "z@other.example")
    spool = store.open_spool(Envelope("a@example.com", rcpts), "smtp 192.0.2.1", dsn)
    spool.write(b"Subject: t\n\nhi\n")
    spool.commit()
    try:
        await run(manager)
    finally:
        manager.close()
    got = {d: dsn for (d, _, _), dsn in zip(remote.calls, remote.dsn, strict=True)}
    assert got["far.example"] == EnvelopeDsn(MailDsn("HDRS", "E1"), {1: never})
    assert got["other.example"] == EnvelopeDsn(MailDsn("HDRS", "E1"), {0: orcpt})
