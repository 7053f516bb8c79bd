"""Golden C:/S: transcripts of the DSN parameters (RFC 3461) through the real SMTP session
(engine, smtpd's DSN grammar from core/dsn.py, policy and replies), fed in one chunk and
byte by byte.  Same format as tests/protocols/test_smtp_golden.py; the files are
tests/smtpd/golden/dsn_*.txt.  The session is the one the workers run, on a FakeTransport
(tests/smtpd/test_session_inprocess.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from tests.protocols.test_smtp_golden import byte_by_byte, load, whole
from tests.smtpd.test_session_inprocess import ctx, home, settled, start

from qtoaster.smtpd.context import SmtpdContext

__all__ = ["ctx", "home"]  # the fixtures, imported for pytest

GOLDEN = sorted((Path(__file__).parent / "golden").glob("dsn_*.txt"))


async def run(ctx: SmtpdContext, path: Path, split: Callable[[bytes], list[bytes]]) -> bytes:
    transcript = load(path)
    session, transport = start(ctx)
    for phase in transcript.phases:
        for chunk in split(phase):
            session.data_received(chunk)
            await settled(session)
    out = transport.take()
    session.connection_lost(None)
    return out


@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
async def test_dsn_golden_one_chunk(ctx: SmtpdContext, path: Path) -> None:
    out = await run(ctx, path, whole)
    assert out.decode().split("\r\n") == load(path).server.decode().split("\r\n")


@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
async def test_dsn_golden_byte_by_byte(ctx: SmtpdContext, path: Path) -> None:
    assert await run(ctx, path, byte_by_byte) == await run(ctx, path, whole)


def test_there_are_dsn_goldens() -> None:
    assert len(GOLDEN) >= 2
