"""rblsmtpd in front of an SMTP session: decide before the greeting whether the client is
blocked, and if so speak rblsmtpd's refusing dialog instead of ours (spec 1).

A mixin of :class:`qtoaster.smtpd.session.SmtpSession`, like ``smtpd/secure.py``.  The
decision is ``policy/rbl.py``'s (RBLSMTPD from tcp.smtp first, then the ``[rblsmtpd]``
zones); the dialog is ``smtpd/rblsmtpd.py``'s.  Only the ``smtp`` listener is screened:
submission and SMTPS clients authenticate, and the toaster never put rblsmtpd in front
of them.

Invariants: no byte of the client's is read as a command before the decision (the
session is busy meanwhile); a DNS problem never blocks unless ``fail_closed`` says so;
a blocked client is disconnected after ``[rblsmtpd] timeout`` seconds whatever it does.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from qtoaster.policy.rbl import Block, env_decision
from qtoaster.smtpd.rblsmtpd import RblsmtpdDialog, log_line

if TYPE_CHECKING:
    from qtoaster.smtpd.context import SmtpdContext

log = logging.getLogger("qtoaster.smtpd")


class RblGate:
    # Provided by SmtpSession.
    ctx: SmtpdContext
    transport: asyncio.Transport | None
    busy: bool
    task: asyncio.Task[None] | None
    id: str
    kind: str
    remote_ip: str
    env: Mapping[str, str]

    rbl_dialog: RblsmtpdDialog | None = None

    def _greet(self) -> None: ...
    def _resume(self) -> None: ...

    def _screen_then_greet(self) -> None:
        """Greet, or first find out (without blocking the loop) whether the client is listed."""
        if self.kind != "smtp":
            self._greet()
            return
        decided, block = env_decision(self.env)
        if decided or self.ctx.rbl is None:
            self._after_screening(block)
            return
        self.busy = True
        self.task = asyncio.get_running_loop().create_task(self._screen())

    async def _screen(self) -> None:
        assert self.ctx.rbl is not None
        try:
            block = await self.ctx.rbl.decide(self.remote_ip, self.env)
        except Exception:  # a bug in the lookup must not block anyone, nor drop the session
            log.exception("%s rblsmtpd lookup failed", self.id)
            block = None
        self.busy = False
        if self.transport is None or self.transport.is_closing():
            return
        self._after_screening(block)
        if block is None:
            self._resume()

    def _after_screening(self, block: Block | None) -> None:
        if block is None:
            self._greet()
            return
        assert self.transport is not None
        log.info("%s %s", self.id, log_line(self.remote_ip, os.getpid(), block.reply))
        lifetime = self.ctx.config.settings.rbl_timeout
        if lifetime == 0:  # rblsmtpd -t0: the refusal alone, then hang up
            self.transport.write(block.reply.render())
            self.transport.close()
            return
        self.rbl_dialog = RblsmtpdDialog(block.reply)
        self.transport.write(self.rbl_dialog.greeting())
        asyncio.get_running_loop().call_later(lifetime, self._rbl_expired)

    def _rbl_data(self, data: bytes) -> None:
        """Input of a blocked client: answered by the fake dialog, never by the engine."""
        assert self.rbl_dialog is not None and self.transport is not None
        out, close = self.rbl_dialog.feed(data)
        if out:
            self.transport.write(out)
        if close:
            self.transport.close()

    def _rbl_expired(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
