"""Read the queue into :class:`~qtoaster.send.entry.MessageJob` values: the manager starts
from what is on disk and nothing else (DESIGN.md section 3).

For each message: its file and its ``state/ID`` records, the recipients rewritten as
qmail-send does (spec 15.1 steps 1-2), and each recipient's channel (the local agent
decides what is local).  Blocking: runs in the manager's queue I/O thread.

Invariants: an unreadable entry is moved to ``bad/`` and logged once, never retried; a
message whose routing cannot be decided now (the directory is down) stays queued and is
read again by the next scan; a message deleted meanwhile is skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Container

from qtoaster.config.control import Controls
from qtoaster.core.domain import domain_key
from qtoaster.core.errors import TemporaryFailure
from qtoaster.core.logfields import fields
from qtoaster.queue import state
from qtoaster.queue.format import BadQueueFile
from qtoaster.queue.store import NoSuchMessage, QueueStore
from qtoaster.send.entry import LOCAL, REMOTE, MessageJob

log = logging.getLogger("qtoaster.send")


def rewrite(recipient: str, envnoathost: str, percenthack: frozenset[str]) -> str:
    """qmail-send's rewriting owned by the queue: no ``@`` -> ``@envnoathost``; then
    percenthack turns ``u%h@dom`` into ``u@h`` while the domain is listed."""
    if "@" not in recipient:
        recipient = f"{recipient}@{envnoathost}"
    local, _, domain = recipient.rpartition("@")
    while domain_key(domain) in percenthack and "%" in local:
        local, _, domain = local.rpartition("%")
    return f"{local}@{domain}"


class QueueReader:
    def __init__(
        self, store: QueueStore, controls: Controls, is_local: Callable[[str], bool]
    ) -> None:
        self._store = store
        self._controls = controls
        self._is_local = is_local  # may raise TemporaryFailure (the directory is down)

    def read(self, names: list[str] | None, known: Container[str]) -> list[MessageJob]:
        """The messages ``names`` (None: every message in ``mess/``) not ``known`` yet."""
        jobs = []
        for qid in self._store.ids() if names is None else names:
            if qid in known:
                continue
            try:
                jobs.append(self._load(qid))
            except NoSuchMessage:
                continue
            except TemporaryFailure as exc:
                # The directory is down (routing needs it): leave the message queued; the
                # periodic rescan picks it up again.
                log.warning("send deferring msg %s: %s", qid, exc)
                continue
            except BadQueueFile as exc:
                log.error("send alert: moving unreadable msg %s to bad/: %s", qid, exc)
                try:
                    self._store.move_to_bad(qid)
                except OSError as err:
                    log.error("send alert: unable to move msg %s to bad/: %s", qid, err)
        return jobs

    def _load(self, qid: str) -> MessageJob:
        message = self._store.load(qid)
        recorded = state.read_state(self._store.state_path(qid))
        c = self._controls
        recipients = tuple(
            rewrite(r, c.envnoathost, c.percenthack) for r in message.envelope.recipients
        )
        channel = tuple(LOCAL if self._is_local(r) else REMOTE for r in recipients)
        log.info(
            "new.msg %s",
            fields(
                msg=qid,
                size=message.size,
                sender=message.envelope.sender,
                rcpts=len(recipients),
                origin=message.origin,
            ),
        )
        return MessageJob(message, recipients, channel, recorded, next_try=0.0)
