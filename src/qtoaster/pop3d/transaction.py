"""The TRANSACTION and UPDATE halves of a POP3 session: qmail-pop3d's commands (spec 19.5).

A part held by :class:`qtoaster.pop3d.session.Pop3Session`, which owns the connection, the
mailbox (:class:`qtoaster.maildir.mailbox.Mailbox`; in a server the mailbox broker's
:class:`qtoaster.broker.client.BrokerMailbox`, opened and locked at login) and its lock.

Invariants:
- RETR of a message that fits in one CHUNK is answered at once, without a task, so its
  answer leaves with the other pipelined answers in one write; a bigger message, and TOP,
  are streamed chunk by chunk, waiting whenever the client lags (flow control);
- whichever path serves a message, the client receives its RFC 1939 3 wire form;
- UPDATE happens only at QUIT (RFC 1939 6), in a thread, and the lock is released after it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from qtoaster.maildir.mailbox import Mailbox, MessageNumberError
from qtoaster.pop3d.context import Pop3Context
from qtoaster.protocols.pop3 import events as ev
from qtoaster.protocols.pop3.server import Pop3Connection

if TYPE_CHECKING:
    from qtoaster.pop3d.session import Pop3Session

log = logging.getLogger("qtoaster.pop3d")
CHUNK = 64 * 1024


class Transaction:
    """The TRANSACTION state's commands, and QUIT's UPDATE, for one session."""

    __slots__ = ("conn", "ctx", "session")

    def __init__(self, session: Pop3Session) -> None:
        self.session = session
        self.ctx: Pop3Context = session.ctx
        self.conn: Pop3Connection = session.conn

    def handle(self, event: object) -> None:
        box = self.session.mailbox
        assert box is not None
        try:
            if isinstance(event, ev.Retr):
                self._retr(box, event.number)  # read_small() checks the number
            elif isinstance(event, ev.Stat):
                count, size = box.stat()
                self.conn.ok(f"{count} {size}")
            elif isinstance(event, ev.List | ev.Uidl):
                self._listing(box, event)
            elif isinstance(event, ev.Top):
                box.get(event.number)
                self.session.wait_for(self._send_message(box, event.number, event.lines))
            elif isinstance(event, ev.Dele):
                box.get(event.number)
                box.delete(event.number)
                self.conn.ok()
            elif isinstance(event, ev.Noop):
                self.conn.ok()
            elif isinstance(event, ev.Rset):
                box.reset()
                self.conn.ok()
            elif isinstance(event, ev.Last):
                self.conn.ok(str(box.last))
            else:  # pragma: no cover - the engine's event set is closed
                raise AssertionError(f"unexpected event {event!r}")
        except MessageNumberError as exc:
            self.conn.err(exc.text)

    def _listing(self, box: Mailbox, event: ev.List | ev.Uidl) -> None:
        uidl = isinstance(event, ev.Uidl)
        if event.number is not None:
            message = box.get(event.number)
            self.conn.ok(f"{message.number} {message.uid if uidl else message.size}")
            return
        lines = (
            f"{m.number} {m.uid if uidl else m.size}".encode("utf-8", "surrogateescape")
            for m in box.undeleted()
        )
        self.conn.multiline("", lines)

    def _retr(self, box: Mailbox, number: int) -> None:
        """RETR: a message that fits in one chunk is answered at once (no task, and its
        reply leaves with the other pipelined answers in one write); a bigger one is
        streamed by :meth:`_send_message`."""
        try:
            data = box.read_small(number, CHUNK)
        except OSError:
            self.conn.err("unable to open that message")
            return
        if data is None:
            self.session.wait_for(self._send_message(box, number, None))
            return
        self.conn.send_message(data)

    async def _send_message(self, box: Mailbox, number: int, lines: int | None) -> None:
        """RETR/TOP: the file streamed in chunks, waiting for the client when it lags."""
        try:
            source = box.open_message(number) if lines is None else None
            top = box.top_lines(number, lines) if lines is not None else None
        except OSError:
            self.conn.err("unable to open that message")
            self.session.flush()
            return
        self.conn.send_multiline_start()
        try:
            if source is not None:
                with source:
                    while chunk := source.read(CHUNK):
                        await self._write_chunk(chunk)
            else:
                assert top is not None
                for piece in top:
                    await self._write_chunk(piece)
        except OSError as exc:  # the file went away mid-way: the client sees a short message
            log.warning("pop3d %s read error in message %d: %s", self.session.id, number, exc)
        self.conn.send_multiline_end()
        self.session.flush()

    async def _write_chunk(self, chunk: bytes) -> None:
        self.conn.send_multiline_chunk(chunk)
        self.session.flush()
        if self.session.writing_paused:
            await self.session.wait_drained()

    def quit(self) -> None:
        box = self.session.mailbox
        if box is None:
            self.conn.ok()
            return
        self.session.wait_for(self._update(box))

    async def _update(self, box: Mailbox) -> None:
        loop = asyncio.get_running_loop()
        try:
            problems = await loop.run_in_executor(self.ctx.executor, box.commit)
        except OSError as exc:  # the mailbox broker went away: nothing was deleted
            problems = [f"mailbox broker: {exc}"]
        self.session.unlock()
        if problems:
            log.warning("pop3d %s update problems: %s", self.session.id, "; ".join(problems))
            self.conn.err("unable to unlink all deleted messages")
        else:
            self.conn.ok()
        self.session.flush()
