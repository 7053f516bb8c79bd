"""An SMTP session driven in-process: a fake asyncio transport records what the session
writes, no sockets (the greeting, EHLO, a transaction reaching the queue, a policy
refusal, QUIT).  The same session code the workers run; the engine and the policy are
real, and so is the queue (a temporary home)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from tests.integration.harness import make_home

from qtoaster.config.loader import load_config
from qtoaster.core.home import Home
from qtoaster.core.reply import NOT_RCPTHOSTS
from qtoaster.queue.store import QueueStore
from qtoaster.smtpd.context import SmtpdContext
from qtoaster.smtpd.session import SmtpSession


class FakeTransport(asyncio.Transport):
    """Records writes; answers peername/sockname; closing is a flag."""

    def __init__(self, peer: tuple[str, int] = ("192.0.2.7", 40000)) -> None:
        super().__init__()
        self._extra = {"peername": peer, "sockname": ("127.0.0.1", 25)}
        self.written = bytearray()
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closing, "written after close"
        self.written += data

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def take(self) -> bytes:
        out, self.written = bytes(self.written), bytearray()
        return out


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_home(tmp_path_factory.mktemp("inprocess"))


@pytest.fixture
def ctx(home: Path) -> Iterator[SmtpdContext]:
    with ThreadPoolExecutor(2) as executor:
        yield SmtpdContext.build(load_config(Home(home)), executor)


def start(ctx: SmtpdContext) -> tuple[SmtpSession, FakeTransport]:
    session, transport = SmtpSession(ctx, set()), FakeTransport()
    session.connection_made(transport)
    return session, transport


async def settled(session: SmtpSession) -> None:
    """Wait for what the session is waiting for (a commit, a lookup), not for time."""
    while session.task is not None and not session.task.done():
        await session.task


async def test_greeting_ehlo_and_quit(ctx: SmtpdContext) -> None:
    session, transport = start(ctx)
    greeting = ctx.config.controls.smtpgreeting
    assert transport.take() == f"220 {greeting} ESMTP\r\n".encode()
    session.data_received(b"EHLO client.test\r\n")
    ehlo = transport.take()
    assert ehlo.startswith(f"250-{greeting}\r\n".encode())
    assert b"PIPELINING" in ehlo and ehlo.endswith(b"\r\n")
    session.data_received(b"QUIT\r\n")
    assert transport.take() == f"221 2.0.0 {greeting}\r\n".encode()
    assert transport.closing
    session.connection_lost(None)


async def test_a_transaction_reaches_the_queue(ctx: SmtpdContext) -> None:
    store = QueueStore(ctx.config.home.queue)
    before = set(store.ids())
    session, transport = start(ctx)
    transport.take()
    session.data_received(
        b"HELO client.test\r\nMAIL FROM:<a@far.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"
    )
    greeting = ctx.config.controls.smtpgreeting
    replies = f"250 {greeting}\r\n250 ok\r\n250 ok\r\n354 go ahead\r\n"  # HELO: no 2.x.y
    assert transport.take() == replies.encode()
    session.data_received(b"Subject: hi\r\n\r\nin process\r\n.\r\n")
    assert session.busy  # the commit runs off the loop; nothing answered yet
    await settled(session)
    accepted = transport.take()
    [qid] = set(store.ids()) - before
    assert re.fullmatch(rb"250 ok [0-9]+ qp " + qid.encode() + rb"\r\n", accepted)
    queued = store.load(qid)
    assert queued.envelope.sender == "a@far.test"
    assert queued.envelope.recipients == ("alice@example.test",)
    session.data_received(b"QUIT\r\n")
    assert transport.take().startswith(b"221 ")
    session.connection_lost(None)


async def test_a_policy_refusal(ctx: SmtpdContext, caplog: pytest.LogCaptureFixture) -> None:
    session, transport = start(ctx)
    transport.take()
    session.data_received(b"HELO client.test\r\nMAIL FROM:<a@far.test>\r\n")
    with caplog.at_level(logging.INFO, logger="qtoaster.policy"):
        session.data_received(b"RCPT TO:<someone@elsewhere.test>\r\n")
    greeting = ctx.config.controls.smtpgreeting
    assert transport.take() == (f"250 {greeting}\r\n250 ok\r\n".encode() + NOT_RCPTHOSTS.render())
    [line] = caplog.messages
    assert line == (
        f"refused session={session.id} stage=rcpt reason=rcpthosts code=553"
        f' reply="553 {NOT_RCPTHOSTS.text}" client=192.0.2.7 helo=client.test'
        " sender=a@far.test to=someone@elsewhere.test"
    )
    session.data_received(b"RCPT TO:<bob@example.test>\r\nQUIT\r\n")  # the transaction goes on
    assert transport.take() == f"250 ok\r\n221 {greeting}\r\n".encode()
    assert transport.closing
    session.connection_lost(None)


async def test_a_connect_refusal_gets_rblsmtpds_dialog(ctx: SmtpdContext) -> None:
    refused = dataclasses.replace(ctx, process_env={"RBLSMTPD": "-go away"})
    session, transport = start(refused)
    assert transport.take() == b"220 rblsmtpd.local\r\n"
    session.data_received(b"HELO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nQUIT\r\n")
    assert transport.take() == (
        b"250 rblsmtpd.local\r\n250 rblsmtpd.local\r\n553 go away\r\n221 rblsmtpd.local\r\n"
    )
    assert transport.closing
    session.connection_lost(None)


async def test_the_worker_hooks_answer_as_qmail_smtpd(ctx: SmtpdContext) -> None:
    """What net.serve calls: the idle limit is timeoutsmtpd, a timeout is 451, a stop is
    421 for an idle session and nothing yet for one whose commit is in flight."""
    assert SmtpSession(ctx, set()).idle_limit() == max(ctx.config.controls.timeoutsmtpd, 1)
    session, transport = start(ctx)
    transport.take()
    session.data_received(b"HELO client.test\r\nMAIL FROM:<a@far.test>\r\n")
    transport.take()
    assert not session.idle  # in a transaction: the drain waits for it
    session.timed_out()
    assert transport.take() == b"451 timeout (#4.4.2)\r\n" and transport.closing
    session.connection_lost(None)

    session, transport = start(ctx)
    transport.take()
    session.data_received(
        b"HELO c\r\nMAIL FROM:<a@far.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"
    )
    session.data_received(b"\r\nbody\r\n.\r\n")
    transport.take()
    session.shut_down()  # the commit is in flight: it finishes and its client gets the 250
    assert session.busy and not transport.closing
    await settled(session)
    assert transport.take().startswith(b"250 ok ")
    session.shut_down()
    assert (
        transport.take() == b"421 service shutting down, try again later (#4.3.2)\r\n"
        and transport.closing
    )
    session.connection_lost(None)


async def test_requiretls_needs_tls(ctx: SmtpdContext) -> None:
    """RFC 8689: not advertised in clear text, and MAIL ... REQUIRETLS is refused there."""
    session, transport = start(ctx)
    transport.take()
    session.data_received(b"EHLO client.test\r\n")
    assert b"REQUIRETLS" not in transport.take()
    session.data_received(b"MAIL FROM:<a@far.test> REQUIRETLS\r\nMAIL FROM:<a@far.test>\r\n")
    assert transport.take() == (
        b"530 5.7.10 REQUIRETLS needs a TLS session (#5.7.10)\r\n250 2.0.0 ok\r\n"
    )
    session.data_received(b"QUIT\r\n")
    session.connection_lost(None)


async def test_requiretls_in_tls_is_queued_as_an_origin_flag(ctx: SmtpdContext) -> None:
    store = QueueStore(ctx.config.home.queue)
    before = set(store.ids())
    session, transport = start(ctx)
    transport.take()
    # The handshake itself is smtpd/secure.py's (tests/integration/test_tls_auth.py); what
    # it leaves behind is the session's TLS description, set here.
    session.secure.tls_protocol = "TLSv1.3 TLS_AES_256_GCM_SHA384"
    session.data_received(b"EHLO client.test\r\n")
    assert transport.take().endswith(b"250 REQUIRETLS\r\n")
    session.data_received(
        b"MAIL FROM:<a@far.test> REQUIRETLS\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"
    )
    assert transport.take() == b"250 2.0.0 ok\r\n250 2.0.0 ok\r\n354 go ahead\r\n"
    session.data_received(b"Subject: hi\r\n\r\nsecret\r\n.\r\n")
    await settled(session)
    assert transport.take().startswith(b"250 ")
    [qid] = set(store.ids()) - before
    assert store.load(qid).origin == "smtp 192.0.2.7 requiretls"
    session.data_received(b"QUIT\r\n")
    session.connection_lost(None)


async def test_bdat_binarymime_is_queued_with_its_origin_flag(ctx: SmtpdContext) -> None:
    """RFC 3030: CHUNKING and BINARYMIME offered; the first BDAT opens the spool, RSET drops
    the chunks so far, and a BINARYMIME message is queued as such (remote delivery sends
    it only by BDAT, protocols/smtp/nexthop.py)."""
    store = QueueStore(ctx.config.home.queue)
    before = set(store.ids())
    session, transport = start(ctx)
    transport.take()
    session.data_received(b"EHLO client.test\r\n")
    assert b"250-CHUNKING\r\n250-BINARYMIME\r\n250 DSN\r\n" in transport.take()
    envelope = b"MAIL FROM:<a@far.test> BODY=BINARYMIME\r\nRCPT TO:<alice@example.test>\r\n"
    session.data_received(envelope + b"BDAT 3\r\nabcRSET\r\n")
    assert transport.take().endswith(b"250 2.0.0 3 octets received\r\n250 2.0.0 flushed\r\n")
    assert session.intake.spool is None
    session.data_received(envelope + b"BDAT 15 LAST\r\nSubject: b\r\n\r\n\x00")
    await settled(session)
    assert transport.take().startswith(b"250 2.0.0 ok\r\n250 2.0.0 ok\r\n250 2.0.0 ok ")
    [qid] = set(store.ids()) - before
    assert store.load(qid).origin == "smtp 192.0.2.7 binarymime"
    session.data_received(b"QUIT\r\n")
    session.connection_lost(None)


async def test_dsn_parameters_are_queued_with_the_message(ctx: SmtpdContext) -> None:
    """RFC 3461: DSN offered; RET/ENVID and NOTIFY/ORCPT reach the queue file with their
    recipient; a bad NOTIFY or RET is 501 and the transaction goes on."""
    store = QueueStore(ctx.config.home.queue)
    before = set(store.ids())
    session, transport = start(ctx)
    transport.take()
    session.data_received(b"EHLO client.test\r\n")
    assert b"250 DSN\r\n" in transport.take()
    session.data_received(
        b"MAIL FROM:<a@far.test> RET=FOO\r\n"
        b"MAIL FROM:<a@far.test> RET=hdrs ENVID=QQ+2B1\r\n"
        b"RCPT TO:<alice@example.test> NOTIFY=NEVER,SUCCESS\r\n"
        b"RCPT TO:<bob@example.test>\r\n"
        b"RCPT TO:<alice@example.test> NOTIFY=success,delay ORCPT=RFC822;alice+40example.test\r\n"
        b"DATA\r\nSubject: d\r\n\r\nhi\r\n.\r\n"
    )
    await settled(session)
    replies = transport.take()
    refused = b"501 5.5.4 syntax error in DSN parameters (#5.5.4)\r\n"
    assert replies.startswith(refused + b"250 2.0.0 ok\r\n")
    assert replies.count(refused) == 2
    [qid] = set(store.ids()) - before
    message = store.load(qid)
    assert message.envelope.recipients == ("bob@example.test", "alice@example.test")
    assert message.dsn.mail.ret == "HDRS" and message.dsn.mail.envid == "QQ+2B1"
    assert message.dsn.rcpt(0).empty
    assert message.dsn.rcpt(1).notify == frozenset({"SUCCESS", "DELAY"})
    assert message.dsn.rcpt(1).orcpt == "rfc822;alice+40example.test"
    session.data_received(b"QUIT\r\n")
    session.connection_lost(None)
