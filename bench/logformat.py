"""Formatting cost of log lines (docs/logging.md): the old free-text frame vs the
documented one, 100k records each, best of 5.

    PYTHONPATH=src python bench/logformat.py [OLD_LOGS_MODULE_PATH]

With a path to the old cli/logs.py (git show 451e496:src/qtoaster/cli/logs.py) it
times that module's SecondCachedFormatter on the old accepted line too.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import time

from qtoaster.cli.logs import LineFormatter
from qtoaster.core.logfields import fields

N = 100_000


def records(make: object) -> list[logging.LogRecord]:
    now = time.time()
    out = []
    for i in range(N):
        rec = make(i)  # type: ignore[operator]
        rec.created = now + i / 1000
        out.append(rec)
    return out


def timed(fmt: logging.Formatter, recs: list[logging.LogRecord]) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for rec in recs:
            fmt.format(rec)
        best = min(best, time.perf_counter() - start)
    return best


def old_record(i: int) -> logging.LogRecord:
    msg = "%s accepted msg %s from %s"
    return logging.LogRecord("q", logging.INFO, "", 0, msg, ("s1a2", f"q{i}", "192.0.2.7"), None)


def new_record(i: int) -> logging.LogRecord:
    text = fields(
        msg=f"q{i}",
        session="s1a2",
        client="192.0.2.7",
        helo="mail.example.org",
        sender="alice@example.org",
        rcpts=2,
        size=1234,
        tls="TLSv1.3",
        auth=None,
    )
    return logging.LogRecord("q", logging.INFO, "", 0, "accepted %s", (text,), None)


def main() -> None:
    logging._srcfile = None
    new = timed(LineFormatter("smtpd#0", 123), records(new_record))
    print("new frame, accepted line with fields() inside the timing: ", end="")
    fmt = LineFormatter("smtpd#0", 123)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for i in range(N):
            fmt.format(new_record(i))
        best = min(best, time.perf_counter() - start)
    print(f"{best * 1e6 / N:.2f} us/line (record creation included)")
    print(f"new frame, format only: {new * 1e6 / N:.2f} us/line")
    if len(sys.argv) > 1:
        spec = importlib.util.spec_from_file_location("oldlogs", sys.argv[1])
        assert spec and spec.loader
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        old_fmt = mod.SecondCachedFormatter("%(asctime)s smtpd#0[123] %(levelname)s %(message)s")
        old = timed(old_fmt, records(old_record))
        print(f"old frame, format only: {old * 1e6 / N:.2f} us/line")
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for i in range(N):
                old_fmt.format(old_record(i))
            best = min(best, time.perf_counter() - start)
        print(f"old frame, record creation included: {best * 1e6 / N:.2f} us/line")


if __name__ == "__main__":
    main()
