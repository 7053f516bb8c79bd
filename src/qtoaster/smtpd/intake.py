"""The DATA half of an SMTP session: the spool, the content checks, and the end of a
message (the queue's commit, or a QMAILQUEUE program).

A mixin of :class:`qtoaster.smtpd.session.SmtpSession`, like ``smtpd/secure.py``: the
session owns the transport and the engine; this part turns DataChunk/DataEnd into a
queued message and one reply.

Invariants:
- 250 only after the queue's commit (or the QMAILQUEUE program's exit 0) returned;
- a spool that is not committed is always aborted, whatever refused the message;
- databytes and the hop count are answered before signatures, and signatures before the
  scanners (spec 4, 11); a scanner's trouble never loses a message (smtpd/content.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from qtoaster.core import reply as R
from qtoaster.core.envelope import Envelope
from qtoaster.core.errors import QueueError
from qtoaster.core.reply import Reply
from qtoaster.protocols.smtp.server import ServerConnection
from qtoaster.queue import exitcodes
from qtoaster.smtpd.content import ContentChecks, Who
from qtoaster.smtpd.qmailqueue import accepted_reply, run_qmailqueue
from qtoaster.smtpd.received import received_header

if TYPE_CHECKING:
    from qtoaster.queue.store import Spool
    from qtoaster.smtpd.context import SmtpdContext

log = logging.getLogger("qtoaster.smtpd")
MAX_HOPS = 100  # qmail-smtpd's MAXHOPS (spec 3.6)


class MessageIntake:
    # Provided by SmtpSession.
    ctx: SmtpdContext
    conn: ServerConnection
    transport: asyncio.Transport | None
    busy: bool
    task: asyncio.Task[None] | None
    id: str
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
    content: ContentChecks | None
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
        settings = self.ctx.config.settings
        content = ContentChecks(
            self.ctx.signatures,
            settings.clamd,
            settings.spamd,
            self.env,
            self.ctx.config.controls.me,
        )
        self.content = None if content.idle else content
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
        if self.content is not None:
            self.content.feed(data)

    def _data_end(self, hops: int) -> None:
        spool, self.spool = self.spool, None
        if spool is None:  # a write to the spool failed during DATA
            self.conn.send(exitcodes.reply_for(exitcodes.WRITE_ERROR))
            return
        if self.oversize:
            spool.abort()
            self.conn.send(R.DATABYTES)
        elif hops >= MAX_HOPS:
            spool.abort()
            self.conn.send(R.TOO_MANY_HOPS)
        elif self.content is not None and not self.content.waits and self._refuse_content(spool):
            return
        else:
            self.busy = True  # no command is handled until the commit answered
            self.task = asyncio.get_running_loop().create_task(self._finish_message(spool))

    def _who(self) -> Who:
        assert self.spool_envelope is not None
        env = self.spool_envelope
        return Who(self.id, self.remote_ip, self.conn.helo, env.sender, env.recipients)

    def _refuse_content(self, spool: Spool) -> bool:
        """The signatures verdict, known at the final dot without waiting."""
        assert self.content is not None
        reply = self.content.executable(self._who())
        if reply is None:
            return False
        spool.abort()
        self.conn.send(reply)
        return True

    async def _finish_message(self, spool: Spool) -> None:
        """Scanners that must wait (clamd, spamd), then the queue or QMAILQUEUE."""
        if self.content is not None and self.content.waits:
            try:
                refused = await self.content.verdict(spool, self._who())
            except Exception:
                log.exception("%s content check failed", self.id)
                refused = exitcodes.reply_for(exitcodes.WRITE_ERROR)
            if refused is not None:
                await asyncio.get_running_loop().run_in_executor(self.ctx.executor, spool.abort)
                self._answer_after_wait(refused)
                return
        program = self.env.get("QMAILQUEUE")
        await (self._qmailqueue(spool, program) if program else self._commit(spool))

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
