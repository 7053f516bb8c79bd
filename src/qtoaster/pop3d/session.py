"""One POP3 session: the pop3d answers to the sans-IO engine's events (spec 19).

The connection, reading, flushing and waiting are :class:`qtoaster.net.driver.EngineDriver`'s;
this module greets, dispatches each event to its state's half and ends the session.
AUTHORIZATION (USER/PASS, APOP, AUTH, CAPA, STLS and the mailbox lock) is in
:mod:`qtoaster.pop3d.authorization`; TRANSACTION and UPDATE (STAT, LIST, RETR, ..., QUIT)
in :mod:`qtoaster.pop3d.transaction`.

Invariants:
- the banner is the APOP timestamp (RFC 1939 7) in qmail-popup's form (spec 19.2);
- pop3s without a usable certificate is dropped before any byte is sent;
- the lock is released whatever ends the session (QUIT, drop, timeout, crash: flock);
  closing without QUIT changes nothing in the mailbox (RFC 1939 6: only QUIT commits).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from typing import ClassVar, cast

from qtoaster.maildir.lock import MailboxLock
from qtoaster.maildir.mailbox import Mailbox
from qtoaster.net.driver import plain_ip
from qtoaster.pop3d.authorization import Authorization
from qtoaster.pop3d.context import Pop3Context
from qtoaster.pop3d.transaction import CHUNK, Transaction
from qtoaster.protocols import sasl
from qtoaster.protocols.pop3 import events as ev
from qtoaster.protocols.pop3.server import NEED_DATA, Pop3Connection
from qtoaster.protocols.sasl import Failure, PlainCredentials, SaslServer

__all__ = ["CHUNK", "IDLE_SECONDS", "Pop3Session"]

log = logging.getLogger("qtoaster.pop3d")
_ids = itertools.count(1)
# qmail-popup and qmail-pop3d exit after 20 idle minutes (spec 19.1).
IDLE_SECONDS = 1200.0
# The engine emits these only in TRANSACTION, i.e. with a mailbox open.
_TRANSACTION_EVENTS = (
    ev.Retr,
    ev.Stat,
    ev.List,
    ev.Uidl,
    ev.Top,
    ev.Dele,
    ev.Noop,
    ev.Rset,
    ev.Last,
)


class Pop3Session(Authorization, Transaction):
    need_data: ClassVar[object] = NEED_DATA
    log: ClassVar[logging.Logger] = log
    idle_seconds: ClassVar[float] = IDLE_SECONDS

    def __init__(self, ctx: Pop3Context, sessions: set[Pop3Session], kind: str) -> None:
        super().__init__(
            Pop3Connection(tls=kind == "pop3s"), sessions, f"pop3:{os.getpid()}:{next(_ids)}"
        )
        self.ctx = ctx
        self.kind = kind
        self.remote_ip = "unknown"
        self.banner = ""
        self.sasl: SaslServer | None = None
        self.mailbox: Mailbox | None = None
        self.lock: MailboxLock | None = None
        self.user: str | None = None
        self.failures = 0

    # -- asyncio callbacks -----------------------------------------------------------
    def connection_made(self, base: asyncio.BaseTransport) -> None:
        super().connection_made(base)
        transport = cast(asyncio.Transport, base)
        peer = transport.get_extra_info("peername") or ("unknown", 0)
        self.remote_ip = plain_ip(str(peer[0]))
        self.sessions.add(self)
        host = self.ctx.config.controls.me
        # The APOP timestamp (RFC 1939 7), qmail-popup's form (spec 19.2).
        self.banner = f"<{os.getpid()}.{int(time.time())}@{host}>"
        if self.kind == "pop3s":
            if self.ctx.tls is None:
                log.warning("%s pop3s without TLS: %s", self.id, self.ctx.tls_problem)
                transport.abort()
                return
            self._begin_tls(implicit=True)
            return
        self._greet()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._unlock()

    def _greet(self) -> None:
        self.conn.ok(self.banner)
        self.flush()

    def close(self) -> None:
        """Timeout, shutdown or a bug: close without UPDATE (RFC 1939 6: only QUIT commits)."""
        super().close()
        self._unlock()

    def _unlock(self) -> None:
        lock, self.lock = self.lock, None
        if lock is not None:
            lock.release()

    # -- the engine's events -----------------------------------------------------------
    def handle(self, event: object) -> None:
        if isinstance(event, _TRANSACTION_EVENTS):  # first: the bulk of a session's commands
            self._transaction(event)
        elif isinstance(event, ev.ConnectionClosed):
            self.close()
        elif isinstance(event, ev.Capa):
            self._capa()
        elif isinstance(event, ev.User):
            if not self._plaintext_ok():
                self.conn.err("plain text login needs TLS first (STLS)", "AUTH")
            else:
                self.conn.ok()
        elif isinstance(event, ev.Pass):
            user = self.conn.user or ""
            if not self._plaintext_ok():
                self.conn.err("plain text login needs TLS first (STLS)", "AUTH")
            else:
                self.wait_for(self._login(PlainCredentials(user, event.password)))
        elif isinstance(event, ev.Apop):
            self.wait_for(self._login_apop(event.name, event.digest))
        elif isinstance(event, ev.Auth):
            self._auth(event)
        elif isinstance(event, ev.AuthLine):
            self._sasl_step(self.sasl.step(event.data) if self.sasl else Failure(sasl.MALFORMED))
        elif isinstance(event, ev.Stls):
            self._stls()
        elif isinstance(event, ev.Quit):
            self._quit()
        else:  # pragma: no cover - the engine's event set is closed
            raise AssertionError(f"unexpected event {event!r}")
