"""RFC 3461 in the queue manager: NOTIFY=NEVER, RET=HDRS, success notices, delay warnings
(a FakeClock and the fake local agent of test_queue_manager; the queue is real)."""

from __future__ import annotations

from email import message_from_bytes
from pathlib import Path

from tests.send.test_queue_manager import BIRTH, FakeAgent, FakeConfig

from qtoaster.config.control import Controls
from qtoaster.core.clock import FakeClock
from qtoaster.core.dsn import EnvelopeDsn, MailDsn, RcptDsn
from qtoaster.core.envelope import Envelope
from qtoaster.core.outcome import Outcome
from qtoaster.queue import state
from qtoaster.queue.store import QueueStore
from qtoaster.send.manager import QueueManager

BODY = b"Subject: t\nX-Mark: 1\n\nsecret body\n"


def make(tmp_path: Path, **kw: object) -> tuple[QueueStore, FakeAgent, FakeClock, QueueManager]:
    clock = FakeClock(BIRTH)
    QueueStore.create(tmp_path / "queue")
    store = QueueStore(tmp_path / "queue", fsync=False, clock=clock)
    agent = FakeAgent()
    config = FakeConfig(Controls.for_me("mx.example.com"))
    return store, agent, clock, QueueManager(store, config, agent, clock, **kw)  # type: ignore[arg-type]


def queue(store: QueueStore, rcpts: tuple[str, ...], dsn: EnvelopeDsn) -> str:
    spool = store.open_spool(Envelope("alice@remote.example", rcpts), "smtp 192.0.2.1", dsn)
    spool.write(BODY)
    return spool.commit()


def notices(store: QueueStore, before: set[str]) -> list[bytes]:
    out = []
    for qid in sorted(set(store.ids()) - before):
        message = store.load(qid)
        assert message.envelope == Envelope("", ("alice@remote.example",))
        out.append(message.path.read_bytes()[message.body_offset :])
    return out


def notify(*words: str, orcpt: str | None = None) -> RcptDsn:
    return RcptDsn(frozenset(words), orcpt)


async def test_success_notice_for_notify_success(tmp_path: Path) -> None:
    store, _, _, manager = make(tmp_path)
    dsn = EnvelopeDsn(
        MailDsn(None, "E+2B1"), {0: notify("SUCCESS", orcpt="rfc822;bob+40example.com")}
    )
    qid = queue(store, ("bob@example.com",), dsn)
    try:
        await manager.run_once()
        [notice] = notices(store, set())
    finally:
        manager.close()
    assert qid not in store.ids()
    parsed = message_from_bytes(notice.split(b"\n", 1)[1])  # after our Received line
    assert parsed["Subject"] == "Successful Mail Delivery Report"
    assert parsed.get_content_type() == "multipart/report"
    status = parsed.get_payload()[1].as_string()
    assert "Action: delivered" in status and "Status: 2.0.0" in status
    assert "Original-Envelope-Id: E+1" in status
    assert "Original-Recipient: rfc822; bob@example.com" in status
    assert b"X-Mark: 1" in notice and b"secret body" not in notice  # the header only


async def test_no_success_notice_without_asking(tmp_path: Path) -> None:
    store, _, _, manager = make(tmp_path)
    queue(store, ("bob@example.com", "carol@example.com"), EnvelopeDsn(MailDsn("HDRS")))
    try:
        await manager.run_once()
    finally:
        manager.close()
    assert store.ids() == []


async def test_notify_never_gives_no_bounce_and_ret_hdrs_returns_headers(tmp_path: Path) -> None:
    store, agent, _, manager = make(tmp_path)
    agent.outcomes["bob@example.com"] = Outcome.PERMANENT
    agent.outcomes["carol@example.com"] = Outcome.PERMANENT
    rcpts = ("bob@example.com", "carol@example.com")
    queue(store, rcpts, EnvelopeDsn(MailDsn("HDRS"), {0: notify("NEVER")}))
    try:
        await manager.run_once()
        [bounce] = notices(store, set())
    finally:
        manager.close()
    assert b"<carol@example.com>:" in bounce and b"<bob@example.com>" not in bounce
    assert b"X-Mark: 1" in bounce and b"secret body" not in bounce


async def test_every_recipient_never_means_no_bounce(tmp_path: Path) -> None:
    store, agent, _, manager = make(tmp_path)
    agent.outcomes["bob@example.com"] = Outcome.PERMANENT
    queue(store, ("bob@example.com",), EnvelopeDsn(rcpts={0: notify("NEVER")}))
    try:
        await manager.run_once()
    finally:
        manager.close()
    assert store.ids() == []


async def test_delay_warning_once_and_not_after_a_restart(tmp_path: Path) -> None:
    store, agent, clock, manager = make(tmp_path, delay_warning=60.0)
    agent.outcomes["bob@example.com"] = Outcome.TEMPORARY
    agent.outcomes["dan@example.com"] = Outcome.TEMPORARY
    rcpts = ("bob@example.com", "carol@example.com", "dan@example.com")
    qid = queue(store, rcpts, EnvelopeDsn(rcpts={2: notify("FAILURE")}))
    try:
        await manager.run_once()
        assert set(store.ids()) == {qid}  # not yet: queued for less than a minute
        assert manager.jobs[qid].next_try == BIRTH + 60  # due for the warning
        clock.advance(60)
        await manager.run_once()
        [warning] = notices(store, {qid})
        clock.advance(1000)
        await manager.run_once()
        assert len(notices(store, {qid})) == 1
    finally:
        manager.close()
    assert state.read_state(store.state_path(qid)).warned is not None
    text = warning.decode()
    assert "Subject: Delayed Mail (still being retried)" in text
    assert "Action: delayed" in text and "Final-Recipient: rfc822; bob@example.com" in text
    assert "dan@example.com" not in text  # NOTIFY=FAILURE: no delay notice
    # a restart reads W and sends nothing again
    _, agent2, clock2, again = make(tmp_path, delay_warning=60.0)
    agent2.outcomes.update(agent.outcomes)
    clock2.advance(5000)
    try:
        await again.run_once()
    finally:
        again.close()
    assert len(notices(store, {qid})) == 1


async def test_delay_warning_off_at_zero(tmp_path: Path) -> None:
    store, agent, clock, manager = make(tmp_path, delay_warning=0.0)
    agent.outcomes["bob@example.com"] = Outcome.TEMPORARY
    qid = queue(store, ("bob@example.com", "carol@example.com"), EnvelopeDsn())
    try:
        await manager.run_once()
        clock.advance(100_000)
        await manager.run_once()
    finally:
        manager.close()
    assert store.ids() == [qid]


def make_remote(tmp_path: Path, dsn_hop: bool) -> tuple[QueueStore, FakeClock, QueueManager]:
    from tests.send.test_remote_channel import FakeRemote

    clock = FakeClock(BIRTH)
    QueueStore.create(tmp_path / "queue")
    store = QueueStore(tmp_path / "queue", fsync=False, clock=clock)
    config = FakeConfig(Controls.for_me("mx.example.com"))
    remote = FakeRemote(dsn_hop=dsn_hop)
    return store, clock, QueueManager(store, config, FakeAgent(), clock, remote)  # type: ignore[arg-type]


async def test_relayed_to_a_dsn_hop_gives_no_notice_from_us(tmp_path: Path) -> None:
    """RFC 3461 5.2.3: the hop got NOTIFY=SUCCESS with the message; its notice, not ours.
    The local recipient that asked still gets ``delivered``; the ``D 1 dsn`` record keeps
    the hop's part known across a restart."""
    store, _, manager = make_remote(tmp_path, dsn_hop=True)
    rcpts = ("bob@example.com", "x@far.example")
    dsn = EnvelopeDsn(rcpts={0: notify("SUCCESS"), 1: notify("SUCCESS")})
    qid = queue(store, rcpts, dsn)
    state_path = store.state_path(qid)
    try:
        await manager.run_once()
        [notice] = notices(store, set())
    finally:
        manager.close()
    assert qid not in store.ids() and not state_path.exists()
    assert b"Action: delivered" in notice and b"Action: relayed" not in notice
    assert b"x@far.example" not in notice.split(b"text/rfc822-headers")[0]


async def test_relayed_to_a_hop_without_dsn_gives_action_relayed(tmp_path: Path) -> None:
    store, _, manager = make_remote(tmp_path, dsn_hop=False)
    queue(store, ("x@far.example",), EnvelopeDsn(rcpts={0: notify("SUCCESS")}))
    try:
        await manager.run_once()
        [notice] = notices(store, set())
    finally:
        manager.close()
    assert b"Action: relayed" in notice and b"Final-Recipient: rfc822; x@far.example" in notice


async def test_a_dsn_hop_recorded_before_a_restart_still_means_no_notice(tmp_path: Path) -> None:
    """``D <idx> dsn`` written by an earlier run: the restarted manager sends no notice."""
    store, _, _, manager = make(tmp_path)
    rcpts = ("x@far.example", "bob@example.com")
    qid = queue(store, rcpts, EnvelopeDsn(rcpts={0: notify("SUCCESS")}))
    state.append(store.state_path(qid), [state.delivered(0, dsn=True)], fsync=False)
    try:
        await manager.run_once()
    finally:
        manager.close()
    assert store.ids() == []  # delivered to bob, and no notice for x


async def test_a_crash_between_notice_and_delete_sends_no_second_notice(tmp_path: Path) -> None:
    """``S`` is recorded once the success notice is queued: a delete that did not happen
    (crash, I/O error) leaves the message, and the restart deletes it without a new notice."""
    store, _, _, manager = make(tmp_path)
    qid = queue(store, ("bob@example.com",), EnvelopeDsn(rcpts={0: notify("SUCCESS")}))

    def no_delete(qid: str) -> None:
        raise OSError("simulated crash before the delete")

    real_delete = store.delete
    store.delete = no_delete  # type: ignore[method-assign]
    try:
        await manager.run_once()
    finally:
        manager.close()
    [notice_id] = set(store.ids()) - {qid}
    assert state.read_state(store.state_path(qid)).notified == notice_id
    store.delete = real_delete  # type: ignore[method-assign]
    _, _, _, again = make(tmp_path)
    try:
        await again.run_once()
    finally:
        again.close()
    assert qid not in store.ids()
    assert [i for i in store.ids() if i != notice_id] == []  # no second notice
