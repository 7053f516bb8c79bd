"""rblsmtpd's dialog in front of an SMTP session whose client the CONNECT checks refused
(spec 1): instead of our greeting, rblsmtpd's refusing dialog.

A part of :class:`qtoaster.smtpd.session.SmtpSession`, made only for a refused client.
The decision is the policy pipeline's (``policy/checks/rblsmtpd.py``, which logs the
rejection); the dialog is ``smtpd/rblsmtpd.py``'s; this part drives it, writes through
the session's one writer, and logs rblsmtpd's own line
(``rblsmtpd: <ip> pid <pid>: <reply>``).

Invariants: once the gate exists, no byte of the client's reaches the SMTP engine (the
session hands every read to :meth:`RblGate.feed` and never resumes its engine); a
refused client is disconnected after ``[rblsmtpd] timeout`` seconds whatever it does.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from qtoaster.core.logfields import fields, reply_text
from qtoaster.core.reply import Reply
from qtoaster.smtpd.rblsmtpd import RblsmtpdDialog

if TYPE_CHECKING:
    from qtoaster.smtpd.session import SmtpSession

log = logging.getLogger("qtoaster.smtpd")


class RblGate:
    __slots__ = ("_dialog", "_refusal", "_session")

    def __init__(self, session: SmtpSession, refusal: Reply) -> None:
        self._session = session
        self._refusal = refusal
        self._dialog = RblsmtpdDialog(refusal)

    def start(self) -> None:
        """rblsmtpd's greeting (or, with ``-t0``, the refusal alone and hang up)."""
        session = self._session
        refusal = self._refusal
        # The pipeline logged the refusal (refused stage=connect reason=rblsmtpd); this is
        # rblsmtpd's own line: the dialog it starts now.
        log.info(
            "rblsmtpd %s",
            fields(
                session=session.id,
                client=session.remote_ip,
                reply=reply_text(refusal.code, refusal.text),
                timeout=session.ctx.config.settings.rbl_timeout,
            ),
        )
        lifetime = session.ctx.config.settings.rbl_timeout
        if lifetime == 0:  # rblsmtpd -t0: the refusal alone, then hang up
            session.write(self._dialog.refusal, close=True)
            return
        session.write(self._dialog.greeting())
        asyncio.get_running_loop().call_later(lifetime, self._expired)

    def feed(self, data: bytes) -> None:
        """Input of a refused client: answered by the fake dialog, never by the engine."""
        out, close = self._dialog.feed(data)
        self._session.write(out, close=close)

    def _expired(self) -> None:
        self._session.write(b"", close=True)
