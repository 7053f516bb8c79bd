"""Greylisting and rate limits in-process: the smtpd worker's CPU per message for the
checks alone (CONNECT, MAIL and RCPT rate limits, the RCPT greylist check of an
auto-whitelisted client), 20 sessions at a time on one event loop, SQLite state in a
temporary home. Run with the tree's src on PYTHONPATH:

    PYTHONPATH=src python bench/limits_checks.py [--messages 10000]

Invariants: bounded (``--messages``), no network, the temporary home is removed.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from qtoaster.config.limitsettings import GreylistSettings, RateLimitSettings
from qtoaster.core.home import Home
from qtoaster.policy.checks.greylist import Greylist
from qtoaster.policy.checks.ratelimit import RateLimit
from qtoaster.policy.state import SqlPolicyState
from qtoaster.policy.verdict import PASS, Facts, SessionState, Stage, Verdict

HIGH = 10**7
LIMITS = RateLimitSettings(
    enabled=True, connections_per_minute=HIGH, messages_per_minute=HIGH, recipients_per_hour=HIGH
)
FACTS = Facts(remote_ip="127.0.0.1", local_ip="127.0.0.1", env={}, sender="a@b", recipient="c@d")


async def measure(state: SqlPolicyState, messages: int) -> tuple[float, float]:
    with ThreadPoolExecutor(2) as pool:
        early = RateLimit(LIMITS, state, pool, frozenset({Stage.CONNECT, Stage.MAIL}), "mx")
        late = RateLimit(LIMITS, state, pool, frozenset({Stage.RCPT}), "mx")
        grey = Greylist(GreylistSettings(enabled=True), state, pool)
        stages = ((early, Stage.CONNECT), (early, Stage.MAIL), (grey, Stage.RCPT))
        stages += ((late, Stage.RCPT),)

        async def one() -> None:
            for check, stage in stages:
                answer = check.check(stage, FACTS, SessionState())
                if not isinstance(answer, Verdict):
                    answer = await answer
                assert answer is PASS

        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(messages // 20):
            await asyncio.gather(*(one() for _ in range(20)))
        return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        state = SqlPolicyState.open(Home(Path(tmp)), None, GreylistSettings())
        with sqlite3.connect(Path(tmp) / "policy" / "state.sqlite3") as db:
            db.execute(
                "INSERT INTO qtoaster_greyclient VALUES ('127.0.0.0/24', 5, ?)", (time.time(),)
            )
        wall, cpu = asyncio.run(measure(state, args.messages))
        state.close()
    n = args.messages
    print(f"{cpu / n * 1e6:.0f} us CPU, {wall / n * 1e6:.0f} us wall per message ({n} messages)")


if __name__ == "__main__":
    main()
