"""Greylisting (issue 18): the triplet's state machine with a fake clock, the pass list,
the shared state on SQLite and on a real PostgreSQL, and the check's skips."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from qtoaster.config.limitsettings import GreylistSettings
from qtoaster.core.clock import FakeClock
from qtoaster.core.home import Home
from qtoaster.policy.checks.greylist import Greylist
from qtoaster.policy.greylist import PassList, Triplet, client_network, decide, whitelisted
from qtoaster.policy.state import SqlPolicyState
from qtoaster.policy.verdict import PASS, Facts, SessionState, Stage, Verdict

ON = GreylistSettings(enabled=True)
NET = "192.0.2.0/24"


def test_first_try_is_greylisted_for_the_delay() -> None:
    d = decide(None, 1000.0, ON)
    assert not d.passes and d.retry_in == 300 and d.entry == Triplet(1000.0, 1000.0, False)


def test_early_retry_is_greylisted_for_the_rest_of_the_delay() -> None:
    d = decide(Triplet(1000.0, 1000.0, False), 1100.0, ON)
    assert not d.passes and d.retry_in == 200 and d.entry.first_seen == 1000.0


def test_retry_within_the_window_passes_and_counts() -> None:
    d = decide(Triplet(1000.0, 1000.0, False), 1300.0, ON)
    assert d.passes and d.retried and d.entry.passed


def test_retry_after_the_window_starts_over() -> None:
    late = 1000.0 + ON.retry_window + 1
    d = decide(Triplet(1000.0, 1000.0, False), late, ON)
    assert not d.passes and d.entry == Triplet(late, late, False)


def test_passed_triplet_passes_until_unused_for_max_age() -> None:
    entry = Triplet(0.0, 1000.0, True)
    d = decide(entry, 1000.0 + ON.max_age, ON)
    assert d.passes and not d.retried
    assert not decide(entry, 1000.0 + ON.max_age + 1, ON).passes


def test_auto_whitelist_threshold_and_age() -> None:
    assert not whitelisted(4, 0.0, 0.0, ON)
    assert whitelisted(5, 0.0, ON.max_age, ON)
    assert not whitelisted(5, 0.0, ON.max_age + 1, ON)
    assert not whitelisted(99, 0.0, 0.0, replace(ON, auto_whitelist=0))


def test_client_network_v4_24_and_v6_64() -> None:
    assert client_network("192.0.2.77", ON) == "192.0.2.0/24"
    assert client_network("2001:db8:1:2:3:4:5:6", ON) == "2001:db8:1:2::/64"
    assert client_network("not-an-ip", ON) == "not-an-ip"


def test_pass_list() -> None:
    text = "# comment\nclient 198.51.100.0/24\nsender @Example.COM\nrecipient user@example.org\n"
    passlist = PassList.parse(text)
    assert passlist.passes("198.51.100.9", "x@y", "z@w")
    assert passlist.passes("192.0.2.1", "a@example.com", "z@w")
    assert passlist.passes("192.0.2.1", "a@b", "USER@example.org")
    assert not passlist.passes("192.0.2.1", "a@b", "other@example.org")
    assert not passlist.passes("192.0.2.1", "", "z@w")


def test_pass_list_bad_line_is_named() -> None:
    with pytest.raises(ValueError, match="line 2"):
        PassList.parse("client 10.0.0.0/8\nhost example.com\n")
    with pytest.raises(ValueError, match="bad address"):
        PassList.parse("client 10.0.0.300\n")


# -- the shared state: SQLite and PostgreSQL ---------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlPolicyState]:
    url = None
    if request.param == "postgresql":
        url = request.getfixturevalue("fresh_postgres_url")
    state = SqlPolicyState.open(Home(tmp_path), url, ON)
    yield state
    state.close()


def test_state_machine_through_the_store(store: SqlPolicyState) -> None:
    clock = FakeClock(1_000_000.0)
    first = store.greylist(NET, "a@b", "c@d", clock.time(), ON)
    assert not first.passes and first.retry_in == 300
    clock.advance(299)
    assert not store.greylist(NET, "a@b", "c@d", clock.time(), ON).passes
    clock.advance(1)
    retry = store.greylist(NET, "a@b", "c@d", clock.time(), ON)
    assert retry.passes and retry.retried
    clock.advance(1)
    assert store.greylist(NET, "a@b", "c@d", clock.time(), ON).passes  # next message at once
    assert not store.greylist(NET, "a@b", "other@d", clock.time(), ON).passes


def test_auto_whitelist_after_n_retries(store: SqlPolicyState) -> None:
    settings = replace(ON, auto_whitelist=2)
    clock = FakeClock(1_000_000.0)
    for n in range(2):
        assert not store.greylist(NET, f"s{n}@b", "c@d", clock.time(), settings).passes
        clock.advance(settings.delay)
        assert store.greylist(NET, f"s{n}@b", "c@d", clock.time(), settings).passes
    assert store.client_whitelisted(NET, clock.time(), settings)
    fresh = store.greylist(NET, "new@b", "c@d", clock.time(), settings)
    assert fresh.passes and fresh.whitelisted


def test_expiry_bounds_growth(store: SqlPolicyState) -> None:
    clock = FakeClock(1_000_000.0)
    for n in range(20):
        store.greylist(NET, f"s{n}@b", "c@d", clock.time(), ON)
        store.take(f"bucket{n}", clock.time(), 10, 60)
    assert store.count("qtoaster_greylist") == 20
    clock.advance(ON.retry_window + 1)
    store.expire(clock.time())
    assert store.count("qtoaster_greylist") == 0
    assert store.count("qtoaster_rate") == 0


def test_buckets(store: SqlPolicyState) -> None:
    clock = FakeClock(1_000_000.0)
    assert [store.take("b", clock.time(), 3, 60) for _ in range(4)] == [True] * 3 + [False]
    clock.advance(19.9)
    assert not store.take("b", clock.time(), 3, 60)
    clock.advance(0.1)  # one comes back every 60/3 s
    assert store.take("b", clock.time(), 3, 60)
    assert not store.take("b", clock.time(), 3, 60)


def test_bucket_batches(store: SqlPolicyState) -> None:
    """A worker's batch (policy/reservations.py): granted whole while the bucket stays at
    most half used, one at a time after that; unused events go back, never past full."""
    clock = FakeClock(1_000_000.0)
    now = clock.time()
    assert [store.take_batch("b", now, 100, 60, 10) for _ in range(6)] == [10] * 5 + [1]
    assert store.take_batch("b", now, 100, 60, 0, back=11) == 0  # 40 used now
    assert store.take_batch("b", now, 100, 60, 10) == 10
    assert store.take_batch("b", now, 100, 60, 10) == 1
    assert sum(store.take("b", now, 100, 60) for _ in range(60)) == 49  # 100 in all
    clock.advance(60)  # full again: a late give-back must not make it hold more than 100
    assert store.take_batch("b", clock.time(), 100, 60, 0, back=10) == 0
    assert sum(store.take("b", clock.time(), 100, 60) for _ in range(110)) == 100


def test_distinct_members(store: SqlPolicyState) -> None:
    now = 1_000_000.0
    assert store.take_distinct("u", "a@x", now, 2, 86400)
    assert store.take_distinct("u", "a@x", now, 2, 86400)  # the same recipient: free
    assert store.take_distinct("u", "b@x", now, 2, 86400)
    assert not store.take_distinct("u", "c@x", now, 2, 86400)
    assert store.take_distinct("u", "b@x", now, 2, 86400)


# -- the check ---------------------------------------------------------------


def facts(**changes: object) -> Facts:
    base = Facts(
        remote_ip="192.0.2.7",
        local_ip="127.0.0.1",
        env={},
        helo="mx.example.com",
        sender="a@example.com",
        recipient="c@example.org",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def run(check: Greylist, f: Facts, session: SessionState | None = None) -> Verdict:
    answer = check.check(Stage.RCPT, f, session or SessionState())
    if isinstance(answer, Verdict):
        return answer
    return asyncio.run(_await(answer))


async def _await(answer: object) -> Verdict:
    result = await answer  # type: ignore[misc]
    assert isinstance(result, Verdict)
    return result


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqlPolicyState]:
    state = SqlPolicyState.open(Home(tmp_path), None, ON)
    yield state
    state.close()


def test_check_greylists_then_passes(sqlite_store: SqlPolicyState) -> None:
    clock = FakeClock(1_000_000.0)
    with ThreadPoolExecutor(1) as pool:
        check = Greylist(ON, sqlite_store, pool, clock=clock)
        first = run(check, facts())
        assert first.reply is not None and first.reply.code == 451
        assert first.reply.render(True) == (
            b"451 4.7.1 greylisted, please try again in 300 seconds (#4.7.1)\r\n"
        )
        clock.advance(300)
        assert run(check, facts()) is PASS


@pytest.mark.parametrize(
    "changes",
    [
        {"env": {"RELAYCLIENT": ""}},
        {"authenticated": True, "auth_user": "u@example.org"},
        {"listener": "submission"},
        {"env": {"GREYLIST": "0"}},
        {"env": {"GREYLIST": ""}},
    ],
)
def test_check_skips(sqlite_store: SqlPolicyState, changes: dict[str, object]) -> None:
    with ThreadPoolExecutor(1) as pool:
        assert run(Greylist(ON, sqlite_store, pool), facts(**changes)) is PASS


def test_check_off_unless_tcp_smtp_switches_it_on(sqlite_store: SqlPolicyState) -> None:
    off = replace(ON, enabled=False)
    with ThreadPoolExecutor(1) as pool:
        check = Greylist(off, sqlite_store, pool)
        assert run(check, facts()) is PASS
        verdict = run(check, facts(env={"GREYLIST": "1"}))
        assert verdict.reply is not None and verdict.reply.code == 451


def test_check_pass_list(sqlite_store: SqlPolicyState) -> None:
    with ThreadPoolExecutor(1) as pool:
        check = Greylist(ON, sqlite_store, pool, PassList.parse("sender example.com\n"))
        assert run(check, facts()) is PASS


def test_spf_pass_skips_and_records_the_triplet(sqlite_store: SqlPolicyState) -> None:
    asked: list[tuple[str, str, str]] = []

    async def spf(ip: str, sender: str, helo: str) -> str:
        asked.append((ip, sender, helo))
        return "pass" if sender.endswith("@example.com") else "softfail"

    with ThreadPoolExecutor(1) as pool:
        check = Greylist(ON, sqlite_store, pool, spf=spf)
        assert run(check, facts()) is PASS
        assert asked == [("192.0.2.7", "a@example.com", "mx.example.com")]
        assert run(check, facts()) is PASS  # recorded as passed: SPF not asked again
        assert len(asked) == 1
        other = run(check, facts(sender="x@elsewhere.test"))
        assert other.reply is not None and other.reply.code == 451


def test_whitelisted_client_costs_no_query_in_its_session(sqlite_store: SqlPolicyState) -> None:
    settings = replace(ON, auto_whitelist=1, delay=1)
    clock = FakeClock(1_000_000.0)
    with ThreadPoolExecutor(1) as pool:
        check = Greylist(settings, sqlite_store, pool, clock=clock)
        run(check, facts())
        clock.advance(1)
        session = SessionState()
        assert run(check, facts(), session) is PASS  # the retry: whitelists the client
        assert run(check, facts(recipient="z@example.org"), session) is PASS
        assert session.greylist.whitelisted
        # answered at once (no awaitable) from now on, in this session and the next
        assert check.check(Stage.RCPT, facts(recipient="y@x"), session) is PASS
        assert check.check(Stage.RCPT, facts(recipient="y@x"), SessionState()) is PASS
