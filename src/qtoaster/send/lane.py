"""The one shape the manager sees of a delivery channel: a :class:`Lane`.

A lane wraps one agent (qmail-lspawn's and qmail-rspawn's job): ``locallane`` runs the
synchronous local agent (``delivery/local.py``) in its thread pool, ``remotelane`` drives
the asynchronous remote agent (``remote/agent.py``) per destination domain.  Either way
the manager asks a lane to deliver some recipients of a message and gets back one final
result per recipient, already recorded in ``state/ID`` by ``results`` and with the rules
applied (agent raised => temporary, dying => permanent).

Invariants every lane keeps:
- at most its concurrency (concurrencylocal, concurrencyremote) deliveries in flight;
  concurrency 0 puts the lane on hold (spec 15.2): the manager does not call it;
- a message deleted from the queue meanwhile is reported as vanished (None), never
  delivered;
- exactly one result per index asked for, in no particular order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from qtoaster.send.entry import MessageJob
from qtoaster.send.results import Results


class Lane(Protocol):
    @property
    def channel(self) -> int:
        """entry.LOCAL or entry.REMOTE: which recipients this lane delivers."""
        ...

    @property
    def skip(self) -> int:
        """qmail's retry constant for this channel (queue/schedule.py)."""
        ...

    def held(self) -> bool:
        """Concurrency 0: the channel is on hold until a restart with another value."""
        ...

    async def deliver(self, job: MessageJob, indexes: Sequence[int], dying: bool) -> Results | None:
        """Deliver ``job``'s recipients at ``indexes``: their recorded results, or None
        if the message vanished from the queue."""
        ...

    def retry_now(self, recipients: Sequence[str] | None) -> None:
        """An operator asked for a retry of these recipients (None: of everything)."""
        ...

    async def close(self) -> None:
        """Release the agent's resources (cached connections); deliveries are over."""
        ...

    def shutdown(self) -> None:
        """Stop the lane's threads, waiting for the ones running."""
        ...
