"""One queued message as the send role holds it in memory (qmail-send's ``job``).

A :class:`MessageJob` is a message from ``mess/`` with its recipients rewritten, the
channel each one goes to (local or remote, qmail's two channels), the results recorded so
far (``state/ID``) and one retry time per channel (spec 15.3: each channel has its own).

Invariants:
- ``state`` never claims more than ``state/ID`` holds: the send role's ``results`` module
  writes the disk first and then updates it;
- ``next_try`` is the earliest retry time among the channels that have a lane and
  recipients left; ``math.inf`` when nothing can become due (remote recipients without a
  remote lane wait for one);
- ``busy``: a pass or a fast-lane delivery is in flight; an idle job is in the due heap.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from qtoaster.queue.state import MessageState
from qtoaster.queue.store import QueuedMessage

LOCAL = 0  # the channel of recipients the local agent delivers (concurrencylocal)
REMOTE = 1  # the channel of every other recipient (concurrencyremote)


@dataclass(slots=True)
class MessageJob:
    message: QueuedMessage
    recipients: tuple[str, ...]  # after rewriting (spec 15.1 steps 1-2)
    channel: tuple[int, ...]  # LOCAL or REMOTE, one per recipient
    state: MessageState
    next_try: float
    busy: bool = False
    due: list[float] = field(default_factory=lambda: [0.0, 0.0])  # per channel (15.3)

    @property
    def qid(self) -> str:
        return self.message.qid

    @property
    def several(self) -> bool:
        """More than one recipient: delivered ones need a ``D`` record."""
        return len(self.recipients) > 1

    def pending(self, channel: int) -> list[int]:
        """The recipients of ``channel`` without a final result, by index."""
        done = self.state.done
        return [i for i, ch in enumerate(self.channel) if ch == channel and i not in done]

    def pending_local(self) -> list[int]:
        return self.pending(LOCAL)

    def pending_remote(self) -> list[int]:
        return self.pending(REMOTE)

    def left(self) -> bool:
        """Some recipient has no final result yet."""
        return len(self.state.done) < len(self.recipients)

    def reschedule(self, channels: Iterable[int]) -> None:
        """next_try: the earliest retry time among ``channels`` with recipients left."""
        dues = [self.due[ch] for ch in channels if self.pending(ch)]
        self.next_try = min(dues, default=math.inf)
