"""remote/body.py and remote/politeness.py: the small pure-ish pieces of the remote side."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from qtoaster.remote.body import Body, body_lacks_final_lf, chunks, has_eight_bit
from qtoaster.remote.politeness import FIRST_PAUSE, MAX_PAUSE, Politeness

_open: list[int] = []


@pytest.fixture(autouse=True)
def _close_fds() -> Iterator[None]:
    yield
    while _open:
        os.close(_open.pop())


def body(tmp_path: Path, data: bytes, header: bytes = b"HEADER\n") -> Body:
    path = tmp_path / f"msg{len(_open)}"
    path.write_bytes(header + data)
    _open.append(os.open(path, os.O_RDONLY))
    return Body(_open[-1], len(header), len(data))


def unreadable(tmp_path: Path) -> Body:
    """A descriptor pread cannot read (a directory): the checks must not raise."""
    _open.append(os.open(tmp_path, os.O_RDONLY))
    return Body(_open[-1], 0, 5)


def test_final_lf(tmp_path: Path) -> None:
    assert not body_lacks_final_lf(body(tmp_path, b"a\nb\n"))
    assert body_lacks_final_lf(body(tmp_path, b"a\nb"))
    assert not body_lacks_final_lf(body(tmp_path, b""))
    assert not body_lacks_final_lf(unreadable(tmp_path))


def test_eight_bit_only_looks_at_the_message(tmp_path: Path) -> None:
    assert not has_eight_bit(body(tmp_path, b"plain\n", header=b"\xff\xfe header\n"))
    assert has_eight_bit(body(tmp_path, "caf\u00e9\n".encode()))
    assert has_eight_bit(body(tmp_path, b"x" * (3 << 20) + b"\x80\n"))  # past the first chunk
    assert not has_eight_bit(unreadable(tmp_path))


def test_chunks_read_only_the_message_from_the_descriptor(tmp_path: Path) -> None:
    """pread: no shared file position, the bytes after offset+size are not read."""
    b = body(tmp_path, b"x" * 150_000, header=b"ENVELOPE\n")
    os.lseek(b.fd, 3, os.SEEK_SET)  # a moved position changes nothing
    pieces = list(chunks(b, 65536))
    assert [len(p) for p in pieces] == [65536, 65536, 150_000 - 131072]
    assert b"".join(pieces) == b"x" * 150_000
    assert list(chunks(Body(b.fd, 9, 4))) == [b"xxxx"]


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
