"""One POP3 session: the pop3d answers to the sans-IO engine's events (spec 19).

The connection, reading, flushing and waiting are :class:`qtoaster.net.driver.EngineDriver`'s
(the one writer to the socket). The session owns the connection, the TLS upgrade, the
logged-in user, the mailbox and its lock (the mailbox broker's connection); it greets,
dispatches each event to one of the two parts it holds and ends the session:
:class:`~qtoaster.pop3d.authorization.Authorization`
(USER/PASS, APOP, AUTH, CAPA, STLS, opening and locking the mailbox) and
:class:`~qtoaster.pop3d.transaction.Transaction` (STAT, LIST, RETR, ..., QUIT and UPDATE).

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

from qtoaster.broker.client import BrokerConnection
from qtoaster.maildir.mailbox import Mailbox
from qtoaster.net.driver import EngineDriver, peer_ip
from qtoaster.pop3d.authorization import Authorization
from qtoaster.pop3d.context import Pop3Context
from qtoaster.pop3d.transaction import CHUNK, Transaction
from qtoaster.protocols import sasl
from qtoaster.protocols.pop3 import events as ev
from qtoaster.protocols.pop3.server import NEED_DATA, Pop3Connection
from qtoaster.protocols.sasl import Failure, PlainCredentials
from qtoaster.tls import upgrade

__all__ = ["CHUNK", "IDLE_SECONDS", "Pop3Session"]

log = logging.getLogger("qtoaster.pop3d")
_ids = itertools.count(1)
# qmail-popup and qmail-pop3d exit after 20 idle minutes (spec 19.1): the default of
# ``[pop3d] timeout``, the seconds a command may take to arrive whole.
IDLE_SECONDS = 1200.0
# The most a TLS handshake may take (STLS, POP3S), or the POP3 timeout if that is shorter.
HANDSHAKE_SECONDS = 60.0
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


class Pop3Session(EngineDriver[Pop3Connection]):
    __slots__ = (
        "banner",
        "commands",
        "ctx",
        "kind",
        "lock",
        "login",
        "mailbox",
        "remote_ip",
        "user",
    )

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
        self.mailbox: Mailbox | None = None
        # The mailbox broker's connection: the broker holds the Maildir's lock while it
        # is open (qtoaster.mailboxd); closing it without COMMIT changes nothing.
        self.lock: BrokerConnection | None = None
        self.user: str | None = None
        self.login = Authorization(self)
        self.commands = Transaction(self)

    # -- asyncio callbacks -----------------------------------------------------------
    def connection_made(self, base: asyncio.BaseTransport) -> None:
        super().connection_made(base)
        transport = cast(asyncio.Transport, base)
        self.remote_ip = peer_ip(transport)
        self.sessions.add(self)
        host = self.ctx.config.controls.me
        # The APOP timestamp (RFC 1939 7), qmail-popup's form (spec 19.2).
        self.banner = f"<{os.getpid()}.{int(time.time())}@{host}>"
        if self.kind == "pop3s":
            if self.ctx.tls is None:
                log.warning("pop3d %s pop3s without TLS: %s", self.id, self.ctx.tls_problem)
                transport.abort()
                return
            self.begin_tls(implicit=True)
            return
        self.greet()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.unlock()

    def greet(self) -> None:
        self.conn.ok(self.banner)
        self.flush()

    def close(self) -> None:
        """Timeout, shutdown or a bug: close without UPDATE (RFC 1939 6: only QUIT commits)."""
        super().close()
        self.unlock()

    def unlock(self) -> None:
        """Close the broker connection, which releases the mailbox lock (at UPDATE, or
        however the session ends)."""
        lock, self.lock = self.lock, None
        if lock is not None:
            lock.release()

    def idle_limit(self) -> float:
        """``[pop3d] timeout``: a command must arrive whole within it (qmail-popup's 20
        minutes by default), however many of its bytes trickle in meanwhile."""
        return float(self.ctx.config.settings.pop3d_timeout)

    # -- the engine's events -----------------------------------------------------------
    def handle(self, event: object) -> None:
        if isinstance(event, _TRANSACTION_EVENTS):  # first: the bulk of a session's commands
            self.commands.handle(event)
        elif isinstance(event, ev.ConnectionClosed):
            self.close()
        elif isinstance(event, ev.Capa):
            self.login.capa()
        elif isinstance(event, ev.User):
            if not self.login.plaintext_ok():
                self.conn.err("plain text login needs TLS first (STLS)", "AUTH")
            else:
                self.conn.ok()
        elif isinstance(event, ev.Pass):
            user = self.conn.user or ""
            if not self.login.plaintext_ok():
                self.conn.err("plain text login needs TLS first (STLS)", "AUTH")
            else:
                self.wait_for(self.login.login(PlainCredentials(user, event.password)))
        elif isinstance(event, ev.Apop):
            self.wait_for(self.login.login_apop(event.name, event.digest))
        elif isinstance(event, ev.Auth):
            self.login.auth(event)
        elif isinstance(event, ev.AuthLine):
            exchange = self.login.sasl
            self.login.sasl_step(exchange.step(event.data) if exchange else Failure(sasl.MALFORMED))
        elif isinstance(event, ev.Stls):
            self.login.stls()
        elif isinstance(event, ev.Quit):
            self.commands.quit()
        else:  # pragma: no cover - the engine's event set is closed
            raise AssertionError(f"unexpected event {event!r}")

    # -- TLS: STLS (RFC 2595) and POP3S ------------------------------------------------
    def begin_tls(self, *, implicit: bool) -> None:
        assert self.ctx.tls is not None
        # The ClientHello is for TLS, not the engine: from here on TLS reads the socket.
        upgrade.start(
            self,
            self.ctx.tls,
            timeout=min(HANDSHAKE_SECONDS, self.idle_limit()),
            who=f"{self.id} client={self.remote_ip}",
            discard=self.conn.discard_input,
            done=self.greet if implicit else self.conn.start_tls_done,
        )
