"""qmail-send's retry schedule and lifetime (spec 15.3)."""

from __future__ import annotations

from qtoaster.queue.schedule import (
    LOCAL_SKIP,
    REMOTE_SKIP,
    TOO_LONG,
    expire_report,
    is_dying,
    next_retry,
)

BIRTH = 1_700_000_000.0


def test_local_retries_follow_squares_of_ten() -> None:
    # local attempts at 0, 100, 400, 900, 1600 s after birth (spec 15.3)
    now = BIRTH
    seen = []
    for _ in range(5):
        now = next_retry(BIRTH, now, LOCAL_SKIP)
        seen.append(now - BIRTH)
    assert seen == [100, 400, 900, 1600, 2500]


def test_remote_retries_follow_squares_of_twenty() -> None:
    now = BIRTH
    seen = []
    for _ in range(4):
        now = next_retry(BIRTH, now, REMOTE_SKIP)
        seen.append(now - BIRTH)
    assert seen == [400, 1600, 3600, 6400]


def test_formula_between_attempts() -> None:
    # (floor(sqrt(150)) + 10)^2 = (12 + 10)^2 = 484
    assert next_retry(BIRTH, BIRTH + 150, LOCAL_SKIP) == BIRTH + 484
    assert next_retry(BIRTH, BIRTH - 5, LOCAL_SKIP) == BIRTH + 100  # clock went back


def test_lifetime() -> None:
    assert not is_dying(BIRTH, BIRTH + 604800, 604800)
    assert is_dying(BIRTH, BIRTH + 604801, 604800)


def test_expire_report() -> None:
    assert expire_report("Temporary error. (#4.3.0)") == "Temporary error. (#4.3.0)\n" + TOO_LONG
    assert expire_report("already\n") == "already\n" + TOO_LONG
    assert expire_report("") == TOO_LONG
