"""The login throttle with a fake clock: growth, cap, decay, success, accounts, IPv6 /64,
LRU bound, session limit, qmail's 5 s mode."""

from __future__ import annotations

import pytest

from qtoaster.auth.throttle import QMAIL_FAILURE_DELAY, LoginThrottle
from qtoaster.core.literal import client_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def throttle(clock: Clock) -> LoginThrottle:
    return LoginThrottle(clock=clock)


def test_no_failures_no_delay(throttle: LoginThrottle) -> None:
    assert throttle.delay_for("192.0.2.1") == 0.0
    assert throttle.delay_for("192.0.2.1", "tim@example.com") == 0.0


def test_delay_doubles_and_is_capped(throttle: LoginThrottle) -> None:
    delays = []
    for _ in range(8):
        throttle.failed("192.0.2.1", None)
        delays.append(throttle.delay_for("192.0.2.1"))
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert throttle.failures("192.0.2.1") == 8
    assert throttle.delay_for("192.0.2.2") == 0.0  # other addresses are not slowed


def test_huge_counts_stay_finite(clock: Clock) -> None:
    throttle = LoginThrottle(clock=clock, cap=1e308)
    for _ in range(2000):
        throttle.failed("192.0.2.1", None)
    assert throttle.delay_for("192.0.2.1") == 2.0**62


def test_failures_are_forgotten_after_a_quiet_period(clock: Clock) -> None:
    throttle = LoginThrottle(clock=clock, forget_after=900.0)
    throttle.failed("192.0.2.1", None)
    throttle.failed("192.0.2.1", None)
    clock.now += 899.0
    assert throttle.delay_for("192.0.2.1") == 2.0
    throttle.failed("192.0.2.1", None)  # a new failure restarts the quiet period
    clock.now += 899.0
    assert throttle.delay_for("192.0.2.1") == 4.0
    clock.now += 1.0
    assert throttle.delay_for("192.0.2.1") == 0.0
    throttle.failed("192.0.2.1", None)
    assert throttle.delay_for("192.0.2.1") == 1.0  # counting starts over


def test_success_forgets_address_and_account(throttle: LoginThrottle) -> None:
    for _ in range(3):
        throttle.failed("192.0.2.1", "tim@example.com")
    # The driver takes the delay before recording a success: the earlier failures count.
    assert throttle.delay_for("192.0.2.1", "tim@example.com") == 4.0
    throttle.succeeded("192.0.2.1", "tim@example.com")
    assert throttle.delay_for("192.0.2.1", "tim@example.com") == 0.0
    assert throttle.delay_for("198.51.100.7", "tim@example.com") == 0.0


def test_account_failures_slow_every_address(throttle: LoginThrottle) -> None:
    # A distributed guess at one account: each address fails once.
    for i in range(4):
        throttle.failed(f"192.0.2.{i}", "Tim@Example.com")
    assert throttle.delay_for("203.0.113.9") == 0.0
    assert throttle.delay_for("203.0.113.9", "tim@example.com") == 8.0
    assert throttle.delay_for("203.0.113.9", "other@example.com") == 0.0


def test_ipv6_counts_per_64(throttle: LoginThrottle) -> None:
    throttle.failed("2001:db8:1:2::1", None)
    throttle.failed("2001:db8:1:2:ffff::9", None)
    assert throttle.delay_for("2001:db8:1:2:abcd::1") == 2.0
    assert throttle.delay_for("2001:db8:1:3::1") == 0.0


@pytest.mark.parametrize(
    ("ip", "key"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("2001:DB8::1", "2001:db8::/64"),
        ("::1", "::/64"),
        ("unix-socket", "unix-socket"),
        ("", ""),
    ],
)
def test_client_key(ip: str, key: str) -> None:
    assert client_key(ip) == key


def test_memory_is_bounded_least_recently_used_first(clock: Clock) -> None:
    throttle = LoginThrottle(clock=clock, max_entries=3)
    for ip in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
        throttle.failed(ip, None)
    throttle.failed("192.0.2.1", None)  # touched again: now the most recent
    throttle.failed("192.0.2.4", None)  # evicts 192.0.2.2
    assert len(throttle) == 3
    assert throttle.failures("192.0.2.2") == 0
    assert throttle.failures("192.0.2.1") == 2
    assert throttle.failures("192.0.2.3") == 1


def test_session_limit(clock: Clock) -> None:
    assert not LoginThrottle(clock=clock).session_exhausted(2)
    assert LoginThrottle(clock=clock).session_exhausted(3)
    assert LoginThrottle(clock=clock, session_failures=1).session_exhausted(1)


def test_qmail_mode_first_failure_waits_five_seconds(clock: Clock) -> None:
    throttle = LoginThrottle(clock=clock, base=QMAIL_FAILURE_DELAY)
    throttle.failed("192.0.2.1", "tim@example.com")
    assert throttle.delay_for("192.0.2.1", "tim@example.com") == 5.0
    throttle.failed("192.0.2.1", "tim@example.com")
    assert throttle.delay_for("192.0.2.1", "tim@example.com") == 10.0


def test_no_account_named(throttle: LoginThrottle) -> None:
    throttle.failed("192.0.2.1", None)
    throttle.failed("192.0.2.1", "")
    assert throttle.failures("192.0.2.1") == 2
    throttle.succeeded("192.0.2.1", None)
    assert throttle.failures("192.0.2.1") == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base": -1.0},
        {"base": 10.0, "cap": 5.0},
        {"forget_after": 0.0},
        {"max_entries": 0},
        {"session_failures": 0},
    ],
)
def test_bad_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        LoginThrottle(**kwargs)  # type: ignore[arg-type]


def test_update_keeps_the_failures_counted() -> None:
    from types import SimpleNamespace

    throttle = LoginThrottle.from_settings(
        SimpleNamespace(auth_failure_delay=1.0, auth_max_failures=3)
    )
    throttle.failed("192.0.2.1", "a@example.com")
    throttle.failed("192.0.2.1", "a@example.com")
    throttle.update(SimpleNamespace(auth_failure_delay=0.5, auth_max_failures=5))
    assert throttle.failures("192.0.2.1") == 2
    assert throttle.delay_for("192.0.2.1") == 1.0  # 0.5 doubled once
    assert throttle.session_failures == 5


def test_success_from_a_clean_address_is_not_delayed_by_an_attack(throttle: LoginThrottle) -> None:
    # An attack on tim's account from elsewhere (issue 13: the count delayed its owner).
    for _ in range(4):
        throttle.failed("203.0.113.9", "tim@example.com")
    assert throttle.success_delay("192.0.2.1") == 0.0  # the owner, from a clean address
    # A guess at that account from the clean address still waits for the attack's count.
    assert throttle.delay_for("192.0.2.1", "tim@example.com") == 8.0
    # From the attacking address a success waits like the next failure would.
    assert throttle.success_delay("203.0.113.9") == 8.0
