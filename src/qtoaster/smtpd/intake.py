"""The DATA half of an SMTP session: the spool, the DATA stage of the policy pipeline,
and the end of a message (the queue's commit, or a QMAILQUEUE program).

A part of :class:`qtoaster.smtpd.session.SmtpSession`: the session owns the transport,
the engine and the envelope being built; this part owns the message being received
(spool, signature scanner, byte count) and turns Data/DataChunk/DataEnd into a queued
message and one reply, which it hands to the engine (it writes nothing itself).

Invariants:
- 250 only after the queue's commit (or the QMAILQUEUE program's exit 0) returned;
- a spool that is not committed is always aborted, whatever refused the message;
- the DATA checks (databytes, hops, signatures, clamd, spamd: docs/policy.md) see the
  message as immutable :class:`MessageFacts`; the spool is flushed before any of their
  awaitables runs, and the header lines they return are added (and the lines they
  name removed: mailauth's forged Authentication-Results) before the commit;
- a check that fails (raises) answers 451, never 5xx, and the message is not queued;
- :attr:`started` and :attr:`received` (every byte of the message, past databytes too)
  give the session the DATA deadline of ``[smtpd] data_min_rate`` (:meth:`deadline`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from qtoaster.core import reply as R
from qtoaster.core.dsn import EnvelopeDsn
from qtoaster.core.envelope import Envelope
from qtoaster.core.errors import QueueError
from qtoaster.core.logfields import fields, reply_text
from qtoaster.core.reply import Reply
from qtoaster.metrics import definitions as metrics
from qtoaster.net.driver import tls_version
from qtoaster.policy.signatures import Scanner, disabled_by
from qtoaster.policy.verdict import Facts, MessageFacts, Stage, Verdict
from qtoaster.queue import exitcodes
from qtoaster.queue.origin import smtp_origin
from qtoaster.smtpd.qmailqueue import accepted_reply, run_qmailqueue
from qtoaster.smtpd.received import received_header

if TYPE_CHECKING:
    from qtoaster.queue.store import Spool
    from qtoaster.smtpd.session import SmtpSession

log = logging.getLogger("qtoaster.smtpd")


class MessageIntake:
    __slots__ = (
        "_envelope",
        "_oversize",
        "_scanner",
        "_session",
        "databytes",
        "received",
        "spool",
        "started",
    )

    def __init__(self, session: SmtpSession) -> None:
        self._session = session
        self.databytes = 0  # the session's limit (0: none), fixed at connect
        self.spool: Spool | None = None
        self._envelope: Envelope | None = None  # for the DATA checks and QMAILQUEUE
        self._scanner: Scanner | None = None  # control/signatures, while DATA streams in
        self.received = 0  # message bytes received (past databytes too: the DATA rate)
        self.started = 0.0  # monotonic time of the 354 (the DATA deadline counts from it)
        self._oversize = False

    def abort(self) -> None:
        """Drop the message being received, if any (connection lost, refused, failed)."""
        spool, self.spool = self.spool, None
        if spool is not None:
            spool.abort()

    def start(self) -> None:
        session = self._session
        assert session.sender is not None
        envelope = Envelope(session.sender, tuple(session.recipients))
        # Our users' mail (AUTH or RELAYCLIENT) is marked: the send role signs it.
        relay = session.secure.auth_user is not None or "RELAYCLIENT" in session.env
        origin = smtp_origin(
            session.remote_ip, relay, session.requiretls, session.binarymime, session.smtputf8
        )
        dsn = EnvelopeDsn(session.dsn_mail, session.dsn_rcpts or None)  # RFC 3461
        session.reset()  # qmail: the transaction is over at DATA, whatever the outcome
        try:
            spool = session.ctx.store.open_spool(envelope, origin, dsn)
            spool.write(self._received())
        except (OSError, QueueError) as exc:
            # qmail-smtpd's answer when qmail-queue cannot be started (spec 3.6).
            log.warning("spool.failed %s", fields(session=session.id, error=exc))
            session.conn.send(R.QQT_FAILURE)
            return
        self.spool, self.received, self._oversize = spool, 0, False
        self.started = time.monotonic()
        self._envelope = envelope
        signatures = session.ctx.signatures
        # control/signatures is matched while the bytes stream in (no second read).
        self._scanner = None
        if signatures is not None and not disabled_by(session.env):
            self._scanner = signatures.scanner()
        session.conn.send(R.GO_AHEAD)

    def _received(self) -> bytes:
        session = self._session
        return received_header(
            remotehost=session.env.get("TCPREMOTEHOST", "unknown"),
            helo=session.conn.helo,
            remoteip=session.remote_ip,
            # qmail's auth patch shows the authenticated user where ident info goes.
            remoteinfo=session.secure.auth_user or session.env.get("TCPREMOTEINFO"),
            local=session.ctx.config.controls.me,
            when=time.time(),
            protocol=session.secure.tls_protocol or "SMTP",
        )

    def deadline(self, timeout: float, min_rate: int) -> float | None:
        """When the message being received is too slow (monotonic), None if no message is
        or ``min_rate`` is 0: the 354 plus ``timeout`` plus one second per ``min_rate``
        bytes received, so a client at least that fast never hits it and a dribbling one
        does, however often it sends (Postfix's smtpd_min_data_rate, for the whole DATA)."""
        if self.spool is None or not min_rate:
            return None
        return self.started + timeout + self.received / min_rate

    def chunk(self, data: bytes) -> None:
        if self.spool is None:
            return
        self.received += len(data)
        if self._oversize:
            return
        if self.databytes and self.received > self.databytes:
            # qmail reads the whole message, then answers 552 (spec 3.6); we stop
            # writing at once so an oversized message costs no disk.
            self._oversize = True
            return
        try:
            self.spool.write(data)
        except (OSError, QueueError) as exc:
            log.warning("spool.failed %s", fields(session=self._session.id, error=exc))
            self.abort()
            return
        scanner = self._scanner
        if scanner is not None and not scanner.found:
            scanner.feed(data)

    def end(self, hops: int) -> None:
        session = self._session
        spool, self.spool = self.spool, None
        if spool is None:  # a write to the spool failed during DATA
            session.conn.send(exitcodes.reply_for(exitcodes.WRITE_ERROR))
            return
        result = session.ctx.pipeline.run(
            Stage.DATA, self._message_facts(spool, hops), session.id, session.policy
        )
        if not inspect.isawaitable(result) and result.reply is not None:
            spool.abort()  # refused at once: databytes, hops, signatures
            session.conn.send(result.reply)
            return
        session.busy = True  # no command is handled until the commit answered
        session.task = asyncio.get_running_loop().create_task(self._finish_message(spool, result))

    def _message_facts(self, spool: Spool, hops: int) -> Facts:
        session = self._session
        envelope = self._envelope
        assert envelope is not None
        scanner = self._scanner
        return Facts(
            remote_ip=session.remote_ip,
            local_ip=session.local_ip,
            env=session.env,
            helo=session.conn.helo,
            sender=envelope.sender,
            recipients=envelope.recipients,
            listener=session.kind,
            authenticated=session.secure.auth_user is not None,
            message=MessageFacts(
                spool.path,
                spool.body_offset,
                self.received,
                hops,
                scanner is not None and scanner.found,
                scanner is not None and scanner.too_deep,
            ),
        )

    async def _finish_message(self, spool: Spool, result: Verdict | Awaitable[Verdict]) -> None:
        """The DATA checks that must wait (clamd, spamd), then the queue or QMAILQUEUE."""
        session = self._session
        if inspect.isawaitable(result) or result.headers or result.drop:  # else nothing to do
            refused = await self._checked(spool, result)
            if refused is not None:
                await asyncio.get_running_loop().run_in_executor(session.ctx.executor, spool.abort)
                session.answer_after_wait(refused)
                return
        program = session.env.get("QMAILQUEUE")
        await (self._qmailqueue(spool, program) if program else self._commit(spool))

    async def _checked(self, spool: Spool, result: Verdict | Awaitable[Verdict]) -> Reply | None:
        """The DATA verdict's refusal, or None once its header lines are in the spool."""
        session = self._session
        try:
            if inspect.isawaitable(result):
                await asyncio.to_thread(spool.flush)  # the checks' awaitables read the file
                result = await result
            if result.reply is not None:
                return result.reply
            if result.headers or result.drop:  # a copy of the file only when there is work
                await asyncio.to_thread(spool.insert_before_message, result.headers, result.drop)
        except Exception:
            log.exception("internal-error %s", fields(session=session.id, where="content check"))
            if inspect.iscoroutine(result):
                result.close()  # never awaited when the flush failed
            return exitcodes.reply_for(exitcodes.WRITE_ERROR)
        return None

    async def _commit(self, spool: Spool) -> None:
        session = self._session
        loop = asyncio.get_running_loop()
        try:
            qid = await loop.run_in_executor(session.ctx.executor, spool.commit)
            reply = Reply(250, f"ok {int(time.time())} qp {qid}")
            envelope = self._envelope
            log.info(
                "accepted %s",
                fields(
                    msg=qid,
                    session=session.id,
                    client=session.remote_ip,
                    helo=session.conn.helo or "",
                    sender=envelope.sender if envelope else "",
                    rcpts=len(envelope.recipients) if envelope else 0,
                    size=self.received,
                    tls=tls_version(session.transport),
                    auth=session.secure.auth_user,
                ),
            )
            metrics.accepted()
        except Exception as exc:  # the queue failed: temporary, nothing was acknowledged
            await loop.run_in_executor(session.ctx.executor, spool.abort)
            log.warning("queue.failed %s", fields(session=session.id, error=exc))
            code = exc.code if isinstance(exc, QueueError) else exitcodes.WRITE_ERROR
            reply = exitcodes.reply_for(code)
        session.answer_after_wait(reply)

    async def _qmailqueue(self, spool: Spool, program: str) -> None:
        """QMAILQUEUE (spec 13): the program queues the message; our spool only fed it."""
        session = self._session
        assert self._envelope is not None
        try:
            spool.flush()
            outcome = await run_qmailqueue(
                program,
                {**os.environ, **self._tcp_environ(), **session.env},
                spool.path,
                spool.body_offset,
                self._envelope,
                home=session.ctx.config.home.root,
                timeout=session.ctx.config.settings.qmailqueue_timeout,
            )
            reply = outcome.reply or accepted_reply(outcome.pid or 0, time.time())
            if outcome.queued:
                metrics.accepted("qmailqueue")
            log.info(
                "qmailqueue %s",
                fields(
                    session=session.id,
                    result="handed" if outcome.queued else "refused",
                    program=program,
                    reply=reply_text(reply.code, reply.text),
                ),
            )
        except Exception as exc:
            log.warning(
                "qmailqueue.failed %s", fields(session=session.id, program=program, error=exc)
            )
            reply = exitcodes.reply_for(exitcodes.EXEC_ERROR)
        finally:
            await asyncio.get_running_loop().run_in_executor(session.ctx.executor, spool.abort)
        session.answer_after_wait(reply)

    def _tcp_environ(self) -> dict[str, str]:
        """tcp-environ(5), as tcpserver gives it to qmail-smtpd and so to QMAILQUEUE."""
        session = self._session
        assert session.transport is not None
        peer = session.transport.get_extra_info("peername") or ("", 0)
        sock = session.transport.get_extra_info("sockname") or ("", 0)
        return {
            "PROTO": "TCP",
            "TCPREMOTEIP": session.remote_ip,
            "TCPREMOTEPORT": str(peer[1]),
            "TCPLOCALIP": session.local_ip,
            "TCPLOCALPORT": str(sock[1]),
        }
