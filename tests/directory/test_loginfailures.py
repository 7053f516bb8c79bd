"""The shared login failure store against a real PostgreSQL: the throttle's rule on it,
two hosts' stores counting together, forgetting by time, purging, concurrent counts."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from qtoaster.auth.throttle import LoginThrottle
from qtoaster.core.home import Home
from qtoaster.directory import loginfailures
from qtoaster.directory.engine import make_engine
from qtoaster.directory.loginfailures import SharedFailures, login_failures, shared_failures


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def stores(
    tmp_path: Path, fresh_postgres_url: str, clock: Clock
) -> Iterator[tuple[SharedFailures, SharedFailures]]:
    """Two stores on one database, as the auth roles of two hosts."""
    home = Home(tmp_path)
    made = tuple(
        SharedFailures(make_engine(home, fresh_postgres_url), clock=clock) for _ in range(2)
    )
    yield made[0], made[1]
    for store in made:
        store.close()


def test_throttle_rule_on_the_shared_store(stores: tuple[SharedFailures, SharedFailures]) -> None:
    throttle = LoginThrottle(store=stores[0])
    delays = []
    for _ in range(7):
        throttle.failed("192.0.2.1", "tim@example.com")
        delays.append(throttle.delay_for("192.0.2.1", "tim@example.com"))
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert throttle.failures("192.0.2.1") == 7
    assert throttle.success_delay("192.0.2.9") == 0.0
    throttle.succeeded("192.0.2.1", "TIM@example.com")
    assert throttle.delay_for("192.0.2.1", "tim@example.com") == 0.0


def test_failures_on_one_host_slow_the_other(
    stores: tuple[SharedFailures, SharedFailures],
) -> None:
    host_a, host_b = (LoginThrottle(store=store) for store in stores)
    host_a.failed("2001:db8:1:2::1", "Tim@Example.com")
    host_a.failed("2001:db8:1:2::2", None)
    assert host_b.delay_for("2001:db8:1:2::ffff") == 2.0  # the /64's count
    assert host_b.delay_for("203.0.113.9", "tim@example.com") == 1.0  # the account's
    assert len(host_b) == 1
    host_b.succeeded("2001:db8:1:2::3", "tim@example.com")
    assert host_a.delay_for("2001:db8:1:2::1", "tim@example.com") == 0.0


def test_counts_are_forgotten_after_a_quiet_period(
    stores: tuple[SharedFailures, SharedFailures], clock: Clock
) -> None:
    store = stores[0]
    store.add("ip", "192.0.2.1")
    store.add("ip", "192.0.2.1")
    clock.now += 899.0
    assert store.current("ip", "192.0.2.1") == 2
    store.add("ip", "192.0.2.1")  # a new failure restarts the quiet period
    clock.now += 899.0
    assert store.current("ip", "192.0.2.1") == 3
    clock.now += 1.0
    assert store.current("ip", "192.0.2.1") == 0
    store.add("ip", "192.0.2.1")
    assert store.current("ip", "192.0.2.1") == 1  # counting starts over


def test_forgotten_rows_are_purged(
    stores: tuple[SharedFailures, SharedFailures],
    clock: Clock,
    fresh_postgres_url: str,
    tmp_path: Path,
) -> None:
    store = stores[0]
    for n in range(5):
        store.add("ip", f"192.0.2.{n}")
    clock.now += 900.0 + loginfailures.PURGE_EVERY
    store.add("account", "tim@example.com")  # the first count after PURGE_EVERY purges
    engine = make_engine(Home(tmp_path), fresh_postgres_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(func.count()).select_from(login_failures)).scalar()
    finally:
        engine.dispose()
    assert rows == 1


def test_concurrent_failures_are_all_counted(
    stores: tuple[SharedFailures, SharedFailures],
) -> None:
    def fail(store: SharedFailures) -> None:
        for _ in range(20):
            store.add("account", "tim@example.com")

    threads = [threading.Thread(target=fail, args=(stores[n % 2],)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert stores[1].current("account", "tim@example.com") == 80


def test_names_postgresql_cannot_store_are_still_counted(
    stores: tuple[SharedFailures, SharedFailures],
) -> None:
    odd = "t\x00m\udcff@example.com"
    stores[0].add("account", odd)
    assert stores[1].current("account", odd) == 1
    assert stores[1].current("account", "tm@example.com") == 0


def test_only_postgresql_gets_a_shared_store(tmp_path: Path, fresh_postgres_url: str) -> None:
    home = Home(tmp_path)
    assert shared_failures(home, None) is None
    assert shared_failures(home, "sqlite:///x.sqlite3") is None
    store = shared_failures(home, "sqlite:///x.sqlite3", fresh_postgres_url)
    assert store is not None
    store.close()
    store = shared_failures(home, fresh_postgres_url)
    assert store is not None
    store.close()
