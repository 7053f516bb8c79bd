"""Rate limits (issue 18): tcp.smtp overrides, each limit's stage and reply, recovery
with a fake clock, RELAYCLIENT and authenticated sessions."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from qtoaster.config.limitsettings import GreylistSettings, RateLimitSettings
from qtoaster.core.clock import FakeClock
from qtoaster.core.home import Home
from qtoaster.policy import reservations
from qtoaster.policy.checks.ratelimit import VARIABLES, RateLimit, client_key, limits_for
from qtoaster.policy.reservations import batch_size
from qtoaster.policy.state import SqlPolicyState
from qtoaster.policy.verdict import PASS, Facts, SessionState, Stage, Verdict

ON = RateLimitSettings(enabled=True)
ALL = frozenset({Stage.CONNECT, Stage.MAIL, Stage.RCPT})


def test_off_by_default_and_switches() -> None:
    assert limits_for({}, RateLimitSettings()) is None
    assert limits_for({"RATELIMIT": "1"}, RateLimitSettings()) is not None
    assert limits_for({"RATELIMIT": "0"}, ON) is None
    assert limits_for({"RATELIMIT": ""}, ON) is None


def test_overrides_and_relayclient() -> None:
    limits = limits_for({"RATELIMIT_MESSAGES": "5", "RATELIMIT_RCPTS": "0"}, ON)
    assert limits is not None
    assert (limits.messages_per_minute, limits.recipients_per_message) == (5, 0)
    relay = limits_for({"RELAYCLIENT": ""}, ON)
    assert relay is not None and not relay.client
    forced = limits_for({"RELAYCLIENT": "", "RATELIMIT": "1"}, ON)
    assert forced is not None and forced.client


def test_client_key() -> None:
    assert client_key("192.0.2.1") == "192.0.2.1"
    assert client_key("2001:db8::1") == "2001:db8::/64"


@pytest.fixture
def check(tmp_path: Path) -> Iterator[tuple[RateLimit, FakeClock]]:
    state = SqlPolicyState.open(Home(tmp_path), None, GreylistSettings())
    clock = FakeClock(1_000_000.0)
    with ThreadPoolExecutor(1) as pool:
        yield RateLimit(ON, state, pool, ALL, "mx.example.test", clock), clock
    state.close()


def facts(**changes: object) -> Facts:
    base = Facts(
        remote_ip="192.0.2.7",
        local_ip="127.0.0.1",
        env={},
        sender="a@example.com",
        recipient="c@example.org",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def run(check: RateLimit, stage: Stage, f: Facts) -> Verdict:
    answer = check.check(stage, f, SessionState())
    if isinstance(answer, Verdict):
        return answer

    async def wait() -> Verdict:
        return await answer  # type: ignore[misc, no-any-return]

    return asyncio.run(wait())


def codes(check: RateLimit, stage: Stage, f: Facts, n: int) -> list[int]:
    return [getattr(run(check, stage, f).reply, "code", 250) for _ in range(n)]


def test_connections_per_minute_and_recovery(check: tuple[RateLimit, FakeClock]) -> None:
    limit, clock = check
    f = facts(env={"RATELIMIT_CONNECTIONS": "3"})
    assert codes(limit, Stage.CONNECT, f, 4) == [250, 250, 250, 421]
    refused = run(limit, Stage.CONNECT, f).reply
    assert refused is not None and refused.render(True) == (
        b"421 4.7.0 mx.example.test too many connections from your address per minute (#4.7.0)\r\n"
    )
    clock.advance(20)  # 60 s / 3: one more
    assert codes(limit, Stage.CONNECT, f, 2) == [250, 421]
    assert codes(limit, Stage.CONNECT, facts(remote_ip="192.0.2.8", env=f.env), 1) == [250]


def test_messages_per_minute(check: tuple[RateLimit, FakeClock]) -> None:
    limit, _ = check
    f = facts(env={"RATELIMIT_MESSAGES": "2"})
    assert codes(limit, Stage.MAIL, f, 3) == [250, 250, 451]
    reply = run(limit, Stage.MAIL, f).reply
    assert reply is not None and reply.enhanced_code == "4.7.1"


def test_recipients_per_message_is_452(check: tuple[RateLimit, FakeClock]) -> None:
    limit, _ = check
    env = {"RATELIMIT_RCPTS": "2"}
    assert run(limit, Stage.RCPT, facts(env=env, recipients=("x@y",))) is PASS
    reply = run(limit, Stage.RCPT, facts(env=env, recipients=("x@y", "z@y"))).reply
    assert reply is not None and reply.render(True) == (
        b"452 4.5.3 too many recipients in this message (#4.5.3)\r\n"
    )


def test_recipients_per_hour(check: tuple[RateLimit, FakeClock]) -> None:
    limit, clock = check
    f = facts(env={"RATELIMIT_RCPTS_HOUR": "2"})
    assert codes(limit, Stage.RCPT, f, 3) == [250, 250, 451]
    clock.advance(1800)
    assert codes(limit, Stage.RCPT, f, 2) == [250, 451]


def test_authenticated_users_have_their_own_limits(check: tuple[RateLimit, FakeClock]) -> None:
    limit, _ = check
    env = {"RATELIMIT_MESSAGES": "1", "RATELIMIT_AUTH_MESSAGES": "2", "RATELIMIT_AUTH_RCPTS": "2"}
    user = facts(env=env, authenticated=True, auth_user="alice@example.test")
    assert codes(limit, Stage.MAIL, user, 3) == [250, 250, 451]
    other = replace(user, auth_user="bob@example.test")
    assert codes(limit, Stage.MAIL, other, 1) == [250]
    rcpts = [replace(user, recipient=r) for r in ("a@x", "b@x", "a@x", "c@x")]
    assert [getattr(run(limit, Stage.RCPT, f).reply, "code", 250) for f in rcpts] == [
        250,
        250,
        250,
        451,
    ]


def test_relayclient_exempt_unless_forced(check: tuple[RateLimit, FakeClock]) -> None:
    limit, _ = check
    relay = facts(env={"RELAYCLIENT": "", "RATELIMIT_MESSAGES": "1"})
    assert codes(limit, Stage.MAIL, relay, 3) == [250, 250, 250]
    forced = facts(env={"RELAYCLIENT": "", "RATELIMIT": "1", "RATELIMIT_MESSAGES": "1"})
    assert codes(limit, Stage.MAIL, forced, 2) == [250, 451]


def test_off_for_a_client(check: tuple[RateLimit, FakeClock]) -> None:
    limit, _ = check
    f = facts(env={"RATELIMIT": "0", "RATELIMIT_MESSAGES": "1"})
    assert limit.check(Stage.MAIL, f, SessionState()) is PASS


# -- batches: a worker reserves events from the shared bucket (policy/reservations.py) --


def test_batch_size() -> None:
    assert [batch_size(n) for n in (5, 19, 20, 60, 1000, 10**7)] == [0, 1, 2, 6, 64, 64]


def test_two_workers_with_batches_never_exceed_the_limit(tmp_path: Path) -> None:
    """Two workers (two checks on one state) with a limit of 100 (batches of 10): most
    events are answered from memory, none past the limit, at most k - 1 refused early."""
    state = SqlPolicyState.open(Home(tmp_path), None, GreylistSettings())
    f = facts(env={"RATELIMIT_MESSAGES": "100"})

    async def scenario() -> tuple[int, int]:
        with ThreadPoolExecutor(1) as pool:
            workers = [RateLimit(ON, state, pool, ALL, "mx", FakeClock(1e6)) for _ in range(2)]
            allowed = hops = 0
            for n in range(150):
                answer = workers[n % 2].check(Stage.MAIL, f, SessionState())
                if not isinstance(answer, Verdict):
                    hops += n < 40
                    answer = await answer
                allowed += answer is PASS
            return allowed, hops

    allowed, hops = asyncio.run(scenario())
    state.close()
    assert 100 - 9 <= allowed <= 100
    assert hops == 4  # of the first 40 events: batches of 10 while the bucket is half full


def test_unused_reservation_goes_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reservations, "LEASE_SECONDS", 0.05)
    state = SqlPolicyState.open(Home(tmp_path), None, GreylistSettings())
    clock = FakeClock(1_000_000.0)
    f = facts(env={"RATELIMIT_MESSAGES": "60"})  # batches of 6, one event a second

    def reserved() -> float:
        with sqlite3.connect(tmp_path / "policy" / "state.sqlite3") as db:
            (tat,) = db.execute("SELECT tat FROM qtoaster_rate").fetchone()
        return float(tat) - clock.time()

    async def scenario() -> float:
        with ThreadPoolExecutor(1) as pool:
            check = RateLimit(ON, state, pool, ALL, "mx", clock)
            answer = check.check(Stage.MAIL, f, SessionState())
            assert not isinstance(answer, Verdict) and await answer is PASS  # type: ignore[misc]
            assert reserved() == pytest.approx(6.0)  # six events counted, one used
            deadline = time.monotonic() + 10
            while reserved() > 1.5:  # the lease ends, five go back
                assert time.monotonic() < deadline, "the reservation never went back"
                await asyncio.sleep(0.01)
            return reserved()

    assert asyncio.run(scenario()) == pytest.approx(1.0)
    state.close()


def test_concurrent_sessions_share_one_reservation(tmp_path: Path) -> None:
    """30 sessions of one worker at once: one transaction in flight, the others wait for
    its batch (and ask again when it is used up), none is lost or counted twice."""
    state = SqlPolicyState.open(Home(tmp_path), None, GreylistSettings())
    asked: list[int] = []
    take_batch = state.take_batch

    def counted(*args: Any) -> int:
        asked.append(args[4])
        return take_batch(*args)

    state.take_batch = counted  # type: ignore[method-assign]
    f = facts(env={"RATELIMIT_MESSAGES": "200"})  # batches of 20

    async def scenario() -> list[Verdict]:
        with ThreadPoolExecutor(2) as pool:
            check = RateLimit(ON, state, pool, ALL, "mx", FakeClock(1e6))

            async def one() -> Verdict:
                answer = check.check(Stage.MAIL, f, SessionState())
                return answer if isinstance(answer, Verdict) else await answer

            return await asyncio.gather(*(one() for _ in range(30)))

    assert asyncio.run(scenario()) == [PASS] * 30
    state.close()
    assert asked == [20, 20]


@pytest.mark.parametrize(
    "env",
    [{}, {"RELAYCLIENT": ""}, {"RATELIMIT": "0"}, {"RELAYCLIENT": "", "RATELIMIT": "1"}]
    + [{variable: "7"} for variable in VARIABLES],
)
@pytest.mark.parametrize("settings", [ON, RateLimitSettings()])
def test_precomputed_limits_are_limits_for(
    tmp_path: Path, env: dict[str, str], settings: RateLimitSettings
) -> None:
    state = SqlPolicyState.open(Home(tmp_path), None, GreylistSettings())
    with ThreadPoolExecutor(1) as pool:
        check = RateLimit(settings, state, pool, ALL)
        assert check.limits(env) == limits_for(env, settings)
    state.close()
