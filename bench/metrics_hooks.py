"""The per-message cost of the metrics hooks (docs/metrics.md, decision 0015).

Times the calls one accepted message that is delivered locally makes (a session, the
accept, the delivery with its delay), in memory (no ``--metrics``) and with
prometheus_client's multiprocess files (``--metrics``): each mode in a fresh interpreter,
since prometheus_client picks its storage when it is imported.

    PYTHONPATH=src python bench/metrics_hooks.py [--messages N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

ONE_MODE = """
import time
from qtoaster.metrics import definitions as metrics
n = {n}
birth = time.time()
started = time.perf_counter()
for _ in range(n):
    metrics.session("smtp")
    metrics.accepted()
    metrics.delivery("success", "local", birth)
elapsed = time.perf_counter() - started
print(f"{{elapsed / n * 1e6:.2f}}")
"""


def measure(n: int, directory: str | None) -> float:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    if directory is not None:
        env["PROMETHEUS_MULTIPROC_DIR"] = directory
    out = subprocess.run(
        [sys.executable, "-c", ONE_MODE.format(n=n)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return float(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=100_000)
    n = parser.parse_args().messages
    memory = measure(n, None)
    with tempfile.TemporaryDirectory() as directory:
        files = measure(n, directory)
    print(f"{n} messages: {memory:.2f} us/message in memory, {files:.2f} us/message with files")


if __name__ == "__main__":
    main()
