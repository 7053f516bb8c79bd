"""The queue's remote channel: one pass of remote deliveries for one message.

The recipients still pending are grouped by domain; each group is one call to the remote
agent (one SMTP connection, spec 17.1), run concurrently, bounded by concurrencyremote
(spec 15.2) and by each domain's politeness window (``remote/politeness.py``).  Results
are recorded in ``state/ID`` the way ``lspawn`` records local ones: ``F`` fsynced before
anyone acts on it, ``D`` unsynced and only for a message with several recipients.

Invariants: a paused domain is not contacted, except on a dying message's last attempt;
an agent that raises defers its recipients (an internal error never bounces mail); a
message deleted from the queue meanwhile is reported as vanished, never delivered.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Protocol

from qtoaster.core.clock import Clock
from qtoaster.core.outcome import Outcome, Result
from qtoaster.queue import schedule, state
from qtoaster.queue.store import QueuedMessage, QueueStore
from qtoaster.remote.body import Body
from qtoaster.remote.politeness import Politeness

log = logging.getLogger("qtoaster.send")

PAUSED = "Delivery to {domain} is paused after a failed attempt; I'll try again later. (#4.4.1)"


class Attempt(Protocol):
    @property
    def results(self) -> list[Result]: ...
    @property
    def reached(self) -> bool: ...


class RemoteAgentLike(Protocol):
    async def deliver(
        self, body: Body, sender: str, recipients: Sequence[str], domain: str
    ) -> Attempt: ...

    async def close(self) -> None: ...


Pending = list[tuple[int, str]]  # (recipient index, address)


class RemoteChannel:
    def __init__(
        self,
        agent: RemoteAgentLike,
        store: QueueStore,
        io: Executor,
        concurrency: int,
        clock: Clock,
    ) -> None:
        self.agent = agent
        self.store = store
        self._io = io
        self._clock = clock
        self._slots = asyncio.Semaphore(max(1, concurrency))
        self.politeness = Politeness(concurrency)

    async def deliver(
        self, message: QueuedMessage, pending: Pending, several: bool, dying: bool
    ) -> list[tuple[int, Result]] | None:
        """Deliver every pending remote recipient; None if the message vanished."""
        groups: dict[str, Pending] = {}
        for idx, rcpt in pending:
            groups.setdefault(rcpt.rpartition("@")[2].lower(), []).append((idx, rcpt))
        done = await asyncio.gather(
            *(
                self._group(message, domain, rcpts, several, dying)
                for domain, rcpts in groups.items()
            )
        )
        if any(part is None for part in done):
            return None
        return [item for part in done if part is not None for item in part]

    def retry_now(self, recipients: Sequence[str] | None = None) -> None:
        """An operator asked for a retry: end the pause of these recipients' domains
        (None: of every domain)."""
        if recipients is None:
            self.politeness.resume()
        for rcpt in recipients or ():
            self.politeness.resume(rcpt.rpartition("@")[2].lower())

    async def close(self) -> None:
        await self.agent.close()

    async def _group(
        self, message: QueuedMessage, domain: str, rcpts: Pending, several: bool, dying: bool
    ) -> list[tuple[int, Result]] | None:
        if not dying and self.politeness.paused_until(domain, self._clock.time()) is not None:
            paused = Result(Outcome.TEMPORARY, PAUSED.format(domain=domain))
            return [(idx, paused) for idx, _ in rcpts]
        async with self.politeness.slot(domain), self._slots:
            if not os.path.exists(message.path):
                return None
            body = Body(str(message.path), message.body_offset, message.size)
            try:
                attempt = await self.agent.deliver(
                    body, message.envelope.sender, [r for _, r in rcpts], domain
                )
                results, reached = attempt.results, attempt.reached
            except Exception as exc:  # a bug must not bounce mail: defer and say so
                log.exception("remote agent raised for msg %s", message.qid)
                report = f"Internal error in remote delivery: {exc}. (#4.3.0)"
                results, reached = [Result(Outcome.TEMPORARY, report)] * len(rcpts), True
            self.politeness.report(domain, reached, self._clock.time())
        if dying:
            results = [_expire(r) for r in results]
        pairs = [(idx, result) for (idx, _), result in zip(rcpts, results, strict=True)]
        if not _needs_record(pairs, several):
            return pairs  # one recipient delivered or deferred: nothing to write
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._io, self._record, message.qid, pairs, several)
        except OSError as exc:
            report = f"Trouble recording the delivery: {exc}. (#4.3.0)"
            return [(idx, Result(Outcome.TEMPORARY, report)) for idx, _ in rcpts]
        return pairs

    def _record(self, qid: str, pairs: list[tuple[int, Result]], several: bool) -> None:
        path = self.store.state_path(qid)
        failed = [state.failed(i, r.report) for i, r in pairs if r.outcome is Outcome.PERMANENT]
        if failed:
            state.append(path, failed, fsync=self.store.fsync, sync_dir=self.store.state_sync.sync)
        if several:
            ok = [state.delivered(i) for i, r in pairs if r.outcome is Outcome.SUCCESS]
            if ok:
                # The peer holds the message now: a lost D only repeats a delivery.
                state.append(path, ok, fsync=False)


def _needs_record(pairs: list[tuple[int, Result]], several: bool) -> bool:
    """F records always; D records only when the message has other recipients."""
    wanted = {Outcome.PERMANENT, Outcome.SUCCESS} if several else {Outcome.PERMANENT}
    return any(result.outcome in wanted for _, result in pairs)


def _expire(result: Result) -> Result:
    if result.outcome is Outcome.TEMPORARY:
        return Result(Outcome.PERMANENT, schedule.expire_report(result.report))
    return result
