"""send/results.py: the rules that make a result final and the records they leave."""

from __future__ import annotations

from pathlib import Path

import pytest

from qtoaster.core.outcome import Outcome, Result
from qtoaster.queue import state
from qtoaster.queue.schedule import TOO_LONG
from qtoaster.queue.store import QueueStore
from qtoaster.send import results

OK = Result(Outcome.SUCCESS, "did 1+0+0/")
LATER = Result(Outcome.TEMPORARY, "Temporary error on maildir delivery. (#4.3.0)")
GONE = Result(Outcome.PERMANENT, "Sorry, no mailbox here by that name. (#5.1.1)")


@pytest.fixture
def store(tmp_path: Path) -> QueueStore:
    QueueStore.create(tmp_path / "queue")
    return QueueStore(tmp_path / "queue", fsync=False)


def test_dying_turns_only_a_temporary_failure_permanent() -> None:
    assert results.final(LATER, dying=False) is LATER
    assert results.final(OK, dying=True) is OK
    assert results.final(GONE, dying=True) is GONE
    expired = results.final(LATER, dying=True)
    assert expired == Result(Outcome.PERMANENT, LATER.report + "\n" + TOO_LONG)


def test_an_agent_that_raised_is_a_logged_deferral(caplog: pytest.LogCaptureFixture) -> None:
    try:
        raise RuntimeError("bug")
    except RuntimeError as exc:
        local = results.agent_raised("local", "q1", exc)
        remote = results.agent_raised("remote", "q1", exc)
    assert local == Result(Outcome.TEMPORARY, "Internal error in delivery: bug. (#4.3.0)")
    assert remote == Result(Outcome.TEMPORARY, "Internal error in remote delivery: bug. (#4.3.0)")
    assert 'internal-error msg=q1 where="local agent"' in caplog.text
    assert 'internal-error msg=q1 where="remote agent"' in caplog.text


def test_records_f_always_d_only_with_several_recipients(store: QueueStore) -> None:
    pairs = [(0, OK), (1, LATER), (2, GONE)]
    assert results.needs_record([(0, OK), (1, LATER)], several=False) is False
    assert results.needs_record([(0, OK)], several=True) is True
    assert results.record(store, "a", pairs, several=False) is pairs
    assert state.read_state(store.state_path("a")) == state.MessageState(failed={2: GONE.report})
    results.record(store, "b", pairs, several=True)
    recorded = state.read_state(store.state_path("b"))
    assert recorded.delivered == {0} and recorded.failed == {2: GONE.report}


def test_a_result_that_cannot_be_recorded_is_a_deferral(store: QueueStore) -> None:
    store.state_path("c").mkdir()  # appending to it fails with an OSError
    got = results.record(store, "c", [(0, GONE), (1, OK)], several=True)
    assert [idx for idx, _ in got] == [0, 1]
    assert all(r.outcome is Outcome.TEMPORARY for _, r in got)
    assert got[0][1].report.startswith("Trouble recording the delivery: ")


def test_logsafe() -> None:
    assert results.logsafe("a\nb\x01c\x7f") == "a/b_c_"
