"""Early talkers in-process (issue 18; docs/antispam.md "Early talkers"): the session's
greeting wait, what it counts as talking before the greeting and as pipelining without
PIPELINING, and the refusal at RCPT through the pipeline (one ``refused`` line each)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from qtoaster.config.loader import load_config
from qtoaster.config.screensettings import PregreetSettings
from qtoaster.core.home import Home
from qtoaster.policy.checks.pregreet import PIPELINED, TALKED_EARLY
from qtoaster.smtpd.context import SmtpdContext

from .test_session_inprocess import home, settled, start

__all__ = ["home"]  # the module-scoped home fixture, shared

TRANSACTION = b"MAIL FROM:<a@far.test>\r\nRCPT TO:<alice@example.test>\r\n"


@pytest.fixture
def base(home: Path) -> Iterator[SmtpdContext]:
    with ThreadPoolExecutor(2) as executor:
        yield SmtpdContext.build(load_config(Home(home)), executor)


def screened(ctx: SmtpdContext, **pregreet: object) -> SmtpdContext:
    settings = dataclasses.replace(
        ctx.config.settings,
        pregreet=PregreetSettings(enabled=True, **pregreet),  # type: ignore[arg-type]
    )
    return dataclasses.replace(ctx, config=dataclasses.replace(ctx.config, settings=settings))


async def test_talking_during_the_greeting_wait_is_refused_at_rcpt(
    base: SmtpdContext, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = screened(base, wait=0.3)
    opened = time.monotonic()
    session, transport = start(ctx)
    assert transport.take() == b"" and session.busy  # the greeting waits
    session.data_received(b"HELO bot.test\r\n" + TRANSACTION)
    assert transport.take() == b""  # nothing is answered before the greeting
    with caplog.at_level(logging.INFO, logger="qtoaster.policy"):
        await settled(session)
    assert time.monotonic() - opened >= 0.3
    greeting = ctx.config.controls.smtpgreeting
    assert transport.take() == (
        f"220 {greeting} ESMTP\r\n250 {greeting}\r\n250 ok\r\n".encode() + TALKED_EARLY.render()
    )
    [line] = [m for m in caplog.messages if m.startswith("refused")]
    assert "stage=rcpt reason=pregreet code=550" in line and "to=alice@example.test" in line
    session.connection_lost(None)


async def test_a_client_that_waits_passes(base: SmtpdContext) -> None:
    ctx = screened(base, wait=0.2, multiline=True)
    session, transport = start(ctx)
    greeting = ctx.config.controls.smtpgreeting
    assert transport.take() == f"220-{greeting} ESMTP\r\n".encode()  # postscreen's banner
    await settled(session)
    assert transport.take() == f"220 {greeting} ESMTP\r\n".encode()
    session.data_received(b"EHLO client.test\r\n")
    assert b"PIPELINING" in transport.take()
    session.data_received(TRANSACTION + b"RSET\r\n")  # pipelined after EHLO: allowed
    replies = transport.take().splitlines()
    assert [r[:3] for r in replies] == [b"250"] * 3
    session.connection_lost(None)


async def test_talking_after_the_first_banner_line_is_early(base: SmtpdContext) -> None:
    ctx = screened(base, wait=0.2, multiline=True)
    session, transport = start(ctx)
    transport.take()
    session.data_received(b"EHLO bot.test\r\n")  # after "220-", before "220 "
    await settled(session)
    session.data_received(TRANSACTION)
    assert transport.take().endswith(TALKED_EARLY.render(True))
    session.connection_lost(None)


@pytest.mark.parametrize(
    "first",
    [b"HELO bot.test\r\nNOOP\r\n", b"NOOP\r\nHELO bot.test\r\n"],
    ids=["after-helo", "before"],
)
async def test_commands_ahead_of_replies_before_ehlo_are_refused(
    base: SmtpdContext, first: bytes
) -> None:
    ctx = screened(base, wait=0)
    session, transport = start(ctx)
    assert transport.take().startswith(b"220 ")  # no wait: greeted at once
    session.data_received(first)
    transport.take()
    session.data_received(b"MAIL FROM:<a@far.test>\r\n")
    session.data_received(b"RCPT TO:<alice@example.test>\r\n")  # each waited: too late
    assert transport.take() == b"250 ok\r\n" + PIPELINED.render()
    session.connection_lost(None)


async def test_one_command_at_a_time_after_helo_passes(base: SmtpdContext) -> None:
    session, transport = start(screened(base, wait=0))
    for line in (b"HELO client.test\r\n", b"MAIL FROM:<a@far.test>\r\n"):
        session.data_received(line)
    session.data_received(b"RCPT TO:<alice@example.test>\r\n")
    assert transport.take().endswith(b"250 ok\r\n250 ok\r\n")
    session.connection_lost(None)


@pytest.mark.parametrize("env", [{"PREGREET": "0"}, {"PREGREET": ""}, {"RELAYCLIENT": ""}])
async def test_switched_off_for_a_client(base: SmtpdContext, env: dict[str, str]) -> None:
    ctx = dataclasses.replace(screened(base, wait=5), process_env=env)
    session, transport = start(ctx)
    assert transport.take().startswith(b"220 ") and not session.busy  # no wait
    session.data_received(b"HELO c.test\r\n" + TRANSACTION)
    assert transport.take().endswith(b"250 ok\r\n250 ok\r\n")
    session.connection_lost(None)


async def test_switched_on_for_a_client_when_off_in_the_settings(base: SmtpdContext) -> None:
    ctx = dataclasses.replace(base, process_env={"PREGREET": "1"})
    session, transport = start(ctx)  # [pregreet] wait keeps its default (1 s)
    assert transport.take() == b"" and session.busy
    session.connection_lost(None)
    assert session.task is not None
    await asyncio.sleep(0)  # the wait has begun; it is not this test's to see through
    session.task.cancel()
