"""The remote lane: one pass of remote deliveries for one message (qmail-rspawn's job).

The recipients asked for are grouped by domain; each group is one call to the remote
agent (one SMTP connection, spec 17.1), run concurrently, bounded by concurrencyremote
(spec 15.2) and by each domain's politeness window (``remote/politeness.py``).  Results
go through ``results`` exactly as local ones do (rules, then the record in ``state/ID``).

The message's DSN request (RFC 3461) goes with each group (``group_dsn``); the agent relays
it to a next hop that offers DSN and marks those successes ``Result.dsn``.

What goes in front of the message (DKIM signatures, ``send/signing.py``) is made once per
message per pass, in the signer's threads, when the first group is about to be sent, and
travels as ``Body.head``.

Invariants: a paused domain is not contacted, except on a dying message's last attempt;
an agent that raises defers its recipients (an internal error never bounces mail); a
message deleted from the queue meanwhile is reported as vanished, never delivered.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from typing import Protocol

from qtoaster.core.clock import Clock
from qtoaster.core.domain import domain_key
from qtoaster.core.dsn import NO_DSN, EnvelopeDsn
from qtoaster.core.outcome import Outcome, Result
from qtoaster.queue import schedule
from qtoaster.queue.origin import BINARYMIME, REQUIRETLS, SMTPUTF8, origin_flags
from qtoaster.queue.store import QueueStore
from qtoaster.remote.body import Body
from qtoaster.remote.politeness import Politeness
from qtoaster.send import results
from qtoaster.send.entry import REMOTE, MessageJob
from qtoaster.send.results import Results
from qtoaster.send.signing import OutboundSigner

log = logging.getLogger("qtoaster.send")

UNREADABLE = "Unable to read the message from the queue: {why}. (#4.3.0)"
PAUSED = "Delivery to {domain} is paused after a failed attempt; I'll try again later. (#4.4.1)"


class AttemptLike(Protocol):
    """What remote/agent.py's RemoteAttempt tells: one result per recipient, and whether
    some host of the destination answered SMTP (the politeness window needs it)."""

    @property
    def results(self) -> list[Result]: ...
    @property
    def reached(self) -> bool: ...


class RemoteAgentLike(Protocol):
    """send/remoteclient.py's RemoteClient (or remote/agent.py's RemoteAgent in-process):
    asynchronous, one domain's recipients per call.  ``body.fd`` is the caller's: the agent
    reads it and never closes it."""

    async def deliver(
        self,
        body: Body,
        sender: str,
        recipients: Sequence[str],
        domain: str,
        requiretls: bool = False,
        smtputf8: bool = False,
        dsn: EnvelopeDsn = NO_DSN,
        binarymime: bool = False,
    ) -> AttemptLike: ...

    async def close(self) -> None: ...


Group = list[tuple[int, str]]  # (recipient index, address) at one domain
HeadMaker = Callable[[], Awaitable[bytes]]  # the message's head, made once per pass


def group_dsn(dsn: EnvelopeDsn, rcpts: Group) -> EnvelopeDsn:
    """The message's DSN request for one group: its recipients renumbered by their
    position in the group, as the agent's transaction counts them."""
    if dsn.empty:
        return NO_DSN
    mine = {pos: dsn.rcpt(idx) for pos, (idx, _) in enumerate(rcpts) if not dsn.rcpt(idx).empty}
    return EnvelopeDsn(dsn.mail, mine or None)


class RemoteLane:
    channel = REMOTE
    skip = schedule.REMOTE_SKIP

    def __init__(
        self,
        agent: RemoteAgentLike,
        store: QueueStore,
        io: Executor,
        concurrency: int,
        clock: Clock,
        signer: OutboundSigner | None = None,
    ) -> None:
        self.agent = agent
        self.signer = signer
        self.store = store
        self._io = io
        self._clock = clock
        self._concurrency = concurrency
        self._slots = asyncio.Semaphore(max(1, concurrency))
        self.politeness = Politeness(concurrency)

    def held(self) -> bool:
        return self._concurrency == 0

    async def deliver(self, job: MessageJob, indexes: Sequence[int], dying: bool) -> Results | None:
        groups: dict[str, Group] = {}
        for idx in indexes:
            rcpt = job.recipients[idx]
            groups.setdefault(domain_key(rcpt.rpartition("@")[2]), []).append((idx, rcpt))
        heads: list[asyncio.Future[bytes]] = []  # made by the first group that sends

        def head() -> asyncio.Future[bytes]:
            if not heads:
                heads.append(asyncio.ensure_future(self._head(job)))
            return heads[0]

        done = await asyncio.gather(
            *(self._group(job, domain, rcpts, dying, head) for domain, rcpts in groups.items())
        )
        if any(part is None for part in done):
            return None
        return [item for part in done if part is not None for item in part]

    def retry_now(self, recipients: Sequence[str] | None) -> None:
        """An operator asked for a retry: end the pause of these recipients' domains
        (None: of every domain)."""
        if recipients is None:
            self.politeness.resume()
        for rcpt in recipients or ():
            self.politeness.resume(domain_key(rcpt.rpartition("@")[2]))

    async def close(self) -> None:
        await self.agent.close()

    def shutdown(self) -> None:
        """The signer's threads; the queue I/O thread is the manager's."""
        if self.signer is not None:
            self.signer.shutdown()

    async def _head(self, job: MessageJob) -> bytes:
        if self.signer is None:
            return b""
        try:
            return await self.signer.head_async(job.message)
        except Exception:  # a signing bug must not stop delivery: send it as it is
            log.exception("dkim signing %s failed; sent unsigned", job.qid)
            return b""

    async def _attempt(
        self, job: MessageJob, fd: int, domain: str, rcpts: Group, head: HeadMaker
    ) -> tuple[list[Result], bool]:
        """One call to the agent with the queue file open as ``fd``, which is closed here."""
        message = job.message
        try:
            body = Body(fd, message.body_offset, message.size, await head())
            attempt = await self.agent.deliver(
                body,
                message.envelope.sender,
                [r for _, r in rcpts],
                domain,
                REQUIRETLS in origin_flags(message.origin),
                smtputf8=SMTPUTF8 in origin_flags(message.origin),
                dsn=group_dsn(message.dsn, rcpts),
                binarymime=BINARYMIME in origin_flags(message.origin),  # RFC 3030: BDAT only
            )
            return attempt.results, attempt.reached
        except Exception as exc:  # a bug must not bounce mail: defer and say so
            return [results.agent_raised("remote", job.qid, exc)] * len(rcpts), True
        finally:
            os.close(fd)

    async def _group(
        self, job: MessageJob, domain: str, rcpts: Group, dying: bool, head: HeadMaker
    ) -> Results | None:
        if not dying and self.politeness.paused_until(domain, self._clock.time()) is not None:
            paused = Result(Outcome.TEMPORARY, PAUSED.format(domain=domain))
            return [(idx, paused) for idx, _ in rcpts]
        message = job.message
        async with self.politeness.slot(domain), self._slots:
            try:
                # The remote delivery process cannot open the queue: it gets this descriptor.
                fd = os.open(message.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return None
            except OSError as exc:
                unreadable = Result(Outcome.TEMPORARY, UNREADABLE.format(why=exc.strerror or exc))
                found, reached = [unreadable] * len(rcpts), True
            else:
                found, reached = await self._attempt(job, fd, domain, rcpts, head)
            self.politeness.report(domain, reached, self._clock.time())
        pairs = [
            (idx, results.final(result, dying))
            for (idx, _), result in zip(rcpts, found, strict=True)
        ]
        if not results.needs_record(pairs, job.several):
            return pairs  # deferred, or one recipient delivered: nothing to write
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._io, results.record, self.store, job.qid, pairs, job.several
        )
