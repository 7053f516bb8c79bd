"""remote/body.py and remote/politeness.py: the small pure-ish pieces of the remote side."""

from __future__ import annotations

import asyncio
from pathlib import Path

from qtoaster.remote.body import Body, body_lacks_final_lf, has_eight_bit
from qtoaster.remote.politeness import FIRST_PAUSE, MAX_PAUSE, Politeness


def body(tmp_path: Path, data: bytes, header: bytes = b"HEADER\n") -> Body:
    path = tmp_path / "msg"
    path.write_bytes(header + data)
    return Body(str(path), len(header), len(data))


def test_final_lf(tmp_path: Path) -> None:
    assert not body_lacks_final_lf(body(tmp_path, b"a\nb\n"))
    assert body_lacks_final_lf(body(tmp_path, b"a\nb"))
    assert not body_lacks_final_lf(body(tmp_path, b""))
    assert not body_lacks_final_lf(Body(str(tmp_path / "gone"), 0, 5))


def test_eight_bit_only_looks_at_the_message(tmp_path: Path) -> None:
    assert not has_eight_bit(body(tmp_path, b"plain\n", header=b"\xff\xfe header\n"))
    assert has_eight_bit(body(tmp_path, "caf\u00e9\n".encode()))
    assert has_eight_bit(body(tmp_path, b"x" * (3 << 20) + b"\x80\n"))  # past the first chunk
    assert not has_eight_bit(Body(str(tmp_path / "gone"), 0, 5))


def test_pause_doubles_and_success_ends_it() -> None:
    polite = Politeness(20)
    assert polite.paused_until("d.example", 0) is None and polite.window("d.example") == 20
    polite.report("d.example", reached=False, now=100)
    assert polite.paused_until("d.example", 100) == 100 + FIRST_PAUSE
    assert polite.paused_until("d.example", 100 + FIRST_PAUSE) is None
    assert polite.window("d.example") == 1
    polite.report("d.example", reached=False, now=200)
    assert polite.paused_until("d.example", 200) == 200 + 2 * FIRST_PAUSE
    for _ in range(20):
        polite.report("d.example", reached=False, now=300)
    assert polite.paused_until("d.example", 300) == 300 + MAX_PAUSE
    polite.report("d.example", reached=True, now=400)
    assert polite.paused_until("d.example", 400) is None and polite.window("d.example") == 20


def test_resume_one_or_all() -> None:
    polite = Politeness(5)
    for domain in ("a.example", "b.example"):
        polite.report(domain, reached=False, now=0)
    polite.resume("a.example")
    assert polite.paused_until("a.example", 1) is None
    assert polite.paused_until("b.example", 1) is not None
    polite.resume()
    assert polite.paused_until("b.example", 1) is None


async def test_window_limits_connections_per_domain() -> None:
    polite = Politeness(2)
    polite.report("slow.example", reached=False, now=0)  # window 1 after a failure
    active = 0
    peak = 0
    gate = asyncio.Event()

    async def one() -> None:
        nonlocal active, peak
        async with polite.slot("slow.example"):
            active += 1
            peak = max(peak, active)
            await gate.wait()
            active -= 1

    tasks = [asyncio.create_task(one()) for _ in range(3)]
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(*tasks)
    assert peak == 1
