"""rblsmtpd's dialog in front of an SMTP session whose client the CONNECT checks refused
(spec 1): instead of our greeting, rblsmtpd's refusing dialog.

A mixin of :class:`qtoaster.smtpd.session.SmtpSession`, like ``smtpd/secure.py``.  The
decision is the policy pipeline's (``policy/checks/rblsmtpd.py``, which logs the
rejection); the dialog is ``smtpd/rblsmtpd.py``'s; this part drives it and writes
rblsmtpd's own log line (``rblsmtpd: <ip> pid <pid>: <reply>``).

Invariants: no byte of the client's is read as a command once the dialog started (the
session does not resume its engine); a refused client is disconnected after
``[rblsmtpd] timeout`` seconds whatever it does.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING

from qtoaster.core.reply import Reply
from qtoaster.smtpd.rblsmtpd import RblsmtpdDialog, log_line

if TYPE_CHECKING:
    from qtoaster.smtpd.context import SmtpdContext

log = logging.getLogger("qtoaster.smtpd")


class RblGate:
    # Provided by SmtpSession.
    ctx: SmtpdContext
    transport: asyncio.Transport | None
    id: str
    remote_ip: str

    rbl_dialog: RblsmtpdDialog | None = None

    def _refuse_connection(self, refusal: Reply) -> None:
        """rblsmtpd's dialog with ``refusal`` as its answer to everything that matters."""
        assert self.transport is not None
        log.info("%s %s", self.id, log_line(self.remote_ip, os.getpid(), refusal))
        lifetime = self.ctx.config.settings.rbl_timeout
        if lifetime == 0:  # rblsmtpd -t0: the refusal alone, then hang up
            self.transport.write(refusal.render())
            self.transport.close()
            return
        self.rbl_dialog = RblsmtpdDialog(refusal)
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
