"""The DATA half of an SMTP session: the spool, the DATA stage of the policy pipeline,
and the end of a message (the queue's commit, or a QMAILQUEUE program).

A mixin of :class:`qtoaster.smtpd.session.SmtpSession`, like ``smtpd/secure.py``: the
session owns the transport and the engine; this part turns DataChunk/DataEnd into a
queued message and one reply.

Invariants:
- 250 only after the queue's commit (or the QMAILQUEUE program's exit 0) returned;
- a spool that is not committed is always aborted, whatever refused the message;
- the DATA checks (databytes, hops, signatures, clamd, spamd: docs/policy.md) see the
  message as immutable :class:`MessageFacts`; the spool is flushed before any of their
  awaitables runs, and the header lines they return are added before the commit;
- a check that fails (raises) answers 451, never 5xx, and the message is not queued.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import time
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING

from qtoaster.core import reply as R
from qtoaster.core.envelope import Envelope
from qtoaster.core.errors import QueueError
from qtoaster.core.reply import Reply
from qtoaster.policy.signatures import Scanner, disabled_by
from qtoaster.policy.verdict import Facts, MessageFacts, SessionState, Stage, Verdict
from qtoaster.protocols.smtp.server import ServerConnection
from qtoaster.queue import exitcodes
from qtoaster.smtpd.qmailqueue import accepted_reply, run_qmailqueue
from qtoaster.smtpd.received import received_header

if TYPE_CHECKING:
    from qtoaster.queue.store import Spool
    from qtoaster.smtpd.context import SmtpdContext

log = logging.getLogger("qtoaster.smtpd")


class MessageIntake:
    # Provided by SmtpSession.
    ctx: SmtpdContext
    conn: ServerConnection
    transport: asyncio.Transport | None
    busy: bool
    task: asyncio.Task[None] | None
    id: str
    kind: str
    policy: SessionState
    remote_ip: str
    local_ip: str
    sender: str | None
    recipients: list[str]
    env: Mapping[str, str]
    auth_user: str | None
    tls_protocol: str | None
    databytes: int
    last_activity: float
    spool: Spool | None
    spool_envelope: Envelope | None
    scanner: Scanner | None
    received_bytes: int
    oversize: bool

    def _reset(self) -> None: ...
    def _resume(self) -> None: ...
    def _abort_spool(self) -> None: ...
    def _answer_after_wait(self, reply: Reply) -> None: ...

    def _data_start(self) -> None:
        assert self.sender is not None
        envelope = Envelope(self.sender, tuple(self.recipients))
        self._reset()  # qmail: the transaction is over at DATA, whatever the outcome
        try:
            spool = self.ctx.store.open_spool(envelope, f"smtp {self.remote_ip}")
            spool.write(self._received())
        except (OSError, QueueError) as exc:
            # qmail-smtpd's answer when qmail-queue cannot be started (spec 3.6).
            log.warning("%s cannot open spool: %s", self.id, exc)
            self.conn.send(R.QQT_FAILURE)
            return
        self.spool, self.received_bytes, self.oversize = spool, 0, False
        self.spool_envelope = envelope
        signatures = self.ctx.signatures
        # control/signatures is matched while the bytes stream in (no second read).
        self.scanner = None
        if signatures is not None and not disabled_by(self.env):
            self.scanner = signatures.scanner()
        self.conn.send(R.GO_AHEAD)

    def _received(self) -> bytes:
        return received_header(
            remotehost=self.env.get("TCPREMOTEHOST", "unknown"),
            helo=self.conn.helo,
            remoteip=self.remote_ip,
            # qmail's auth patch shows the authenticated user where ident info goes.
            remoteinfo=self.auth_user or self.env.get("TCPREMOTEINFO"),
            local=self.ctx.config.controls.me,
            when=time.time(),
            protocol=self.tls_protocol or "SMTP",
        )

    def _data_chunk(self, data: bytes) -> None:
        if self.spool is None or self.oversize:
            return
        self.received_bytes += len(data)
        if self.databytes and self.received_bytes > self.databytes:
            # qmail reads the whole message, then answers 552 (spec 3.6); we stop
            # writing at once so an oversized message costs no disk.
            self.oversize = True
            return
        try:
            self.spool.write(data)
        except (OSError, QueueError) as exc:
            log.warning("%s spool write failed: %s", self.id, exc)
            self._abort_spool()
            return
        scanner = self.scanner
        if scanner is not None and not scanner.found:
            scanner.feed(data)

    def _data_end(self, hops: int) -> None:
        spool, self.spool = self.spool, None
        if spool is None:  # a write to the spool failed during DATA
            self.conn.send(exitcodes.reply_for(exitcodes.WRITE_ERROR))
            return
        result = self.ctx.pipeline.run(
            Stage.DATA, self._message_facts(spool, hops), self.id, self.policy
        )
        if not inspect.isawaitable(result) and result.reply is not None:
            spool.abort()  # refused at once: databytes, hops, signatures
            self.conn.send(result.reply)
            return
        self.busy = True  # no command is handled until the commit answered
        self.task = asyncio.get_running_loop().create_task(self._finish_message(spool, result))

    def _message_facts(self, spool: Spool, hops: int) -> Facts:
        envelope = self.spool_envelope
        assert envelope is not None
        scanner = self.scanner
        return Facts(
            remote_ip=self.remote_ip,
            local_ip=self.local_ip,
            env=self.env,
            helo=self.conn.helo,
            sender=envelope.sender,
            recipients=envelope.recipients,
            listener=self.kind,
            message=MessageFacts(
                spool.path,
                spool.body_offset,
                self.received_bytes,
                hops,
                scanner is not None and scanner.found,
            ),
        )

    async def _finish_message(self, spool: Spool, result: Verdict | Awaitable[Verdict]) -> None:
        """The DATA checks that must wait (clamd, spamd), then the queue or QMAILQUEUE."""
        if inspect.isawaitable(result) or result.headers:  # else nothing to wait for or add
            refused = await self._checked(spool, result)
            if refused is not None:
                await asyncio.get_running_loop().run_in_executor(self.ctx.executor, spool.abort)
                self._answer_after_wait(refused)
                return
        program = self.env.get("QMAILQUEUE")
        await (self._qmailqueue(spool, program) if program else self._commit(spool))

    async def _checked(self, spool: Spool, result: Verdict | Awaitable[Verdict]) -> Reply | None:
        """The DATA verdict's refusal, or None once its header lines are in the spool."""
        try:
            if inspect.isawaitable(result):
                await asyncio.to_thread(spool.flush)  # the checks' awaitables read the file
                result = await result
            if result.reply is not None:
                return result.reply
            if result.headers:
                await asyncio.to_thread(spool.insert_before_message, result.headers)
        except Exception:
            log.exception("%s content check failed", self.id)
            if inspect.iscoroutine(result):
                result.close()  # never awaited when the flush failed
            return exitcodes.reply_for(exitcodes.WRITE_ERROR)
        return None

    async def _commit(self, spool: Spool) -> None:
        loop = asyncio.get_running_loop()
        try:
            qid = await loop.run_in_executor(self.ctx.executor, spool.commit)
            reply = Reply(250, f"ok {int(time.time())} qp {qid}")
            log.info("%s accepted msg %s from %s", self.id, qid, self.remote_ip)
        except Exception as exc:  # the queue failed: temporary, nothing was acknowledged
            await loop.run_in_executor(self.ctx.executor, spool.abort)
            log.warning("%s queue commit failed: %s", self.id, exc)
            code = exc.code if isinstance(exc, QueueError) else exitcodes.WRITE_ERROR
            reply = exitcodes.reply_for(code)
        self._answer_after_wait(reply)

    async def _qmailqueue(self, spool: Spool, program: str) -> None:
        """QMAILQUEUE (spec 13): the program queues the message; our spool only fed it."""
        assert self.spool_envelope is not None
        try:
            spool.flush()
            outcome = await run_qmailqueue(
                program,
                {**os.environ, **self._tcp_environ(), **self.env},
                spool.path,
                spool.body_offset,
                self.spool_envelope,
                home=self.ctx.config.home.root,
                timeout=self.ctx.config.settings.qmailqueue_timeout,
            )
            reply = outcome.reply or accepted_reply(outcome.pid or 0, time.time())
            log.info(
                "%s %s msg via %s: %s",
                self.id,
                "handed" if outcome.queued else "refused",
                program,
                reply.render().decode(errors="replace").strip(),
            )
        except Exception as exc:
            log.warning("%s QMAILQUEUE %s failed: %s", self.id, program, exc)
            reply = exitcodes.reply_for(exitcodes.EXEC_ERROR)
        finally:
            await asyncio.get_running_loop().run_in_executor(self.ctx.executor, spool.abort)
        self._answer_after_wait(reply)

    def _tcp_environ(self) -> dict[str, str]:
        """tcp-environ(5), as tcpserver gives it to qmail-smtpd and so to QMAILQUEUE."""
        assert self.transport is not None
        peer = self.transport.get_extra_info("peername") or ("", 0)
        sock = self.transport.get_extra_info("sockname") or ("", 0)
        return {
            "PROTO": "TCP",
            "TCPREMOTEIP": self.remote_ip,
            "TCPREMOTEPORT": str(peer[1]),
            "TCPLOCALIP": self.local_ip,
            "TCPLOCALPORT": str(sock[1]),
        }
