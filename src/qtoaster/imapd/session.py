"""One IMAP session: imapd's answers to the sans-IO engine's events (RFC 9051).

The connection, reading, flushing and waiting are :class:`qtoaster.net.driver.EngineDriver`'s
(the one writer to the socket). The session owns the connection, the TLS upgrade, the
logged-in user, the mail handlers (the lead's ``MailSession`` over the user's store) and
IDLE. It greets, answers the commands of every state itself (CAPABILITY, NOOP, LOGOUT,
ID), hands the not-authenticated ones to :class:`~qtoaster.imapd.login.Login` and every
other command after login to the mail handlers, which answer tagged themselves.

What the mail handlers use of the session: ``conn`` (the engine: ``untagged``,
``untagged_bytes``, ``tagged``, ``continuation``), ``await drain()`` (write what the engine
holds and wait while the client lags: big FETCH answers), ``ctx`` (``executor``,
``settings``, ``hostname``) and ``user``.

Invariants:
- the greeting is ``* OK [CAPABILITY ...] qtoaster ready.``; imaps without a usable
  certificate is dropped before any byte is sent (as pop3s);
- while IDLE the session is not busy, so the engine's IdleDone is taken; the IDLE task is
  stopped only between two polls (a poll is never cut in half), and the tagged OK of
  IDLE follows the last update it sent;
- a session times out after ``[imapd] timeout`` without a command (``* BYE
  Autologout``), an IDLE after ``[imapd] idle_timeout``;
- the mail handlers are closed however the session ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from typing import Any, ClassVar, Protocol, cast

from qtoaster.imapd.context import ImapContext
from qtoaster.imapd.login import Login
from qtoaster.net.driver import EngineDriver, peer_ip
from qtoaster.protocols.imap import commands as cmd
from qtoaster.protocols.imap.events import AuthLine, ConnectionClosed
from qtoaster.protocols.imap.server import NEED_DATA, ImapConnection, State
from qtoaster.tls import upgrade


class MailHandlers(Protocol):
    """The mail handlers of a logged-in session (``qtoaster.imapd.mailsession``, made
    with ``MailSession(session, store, watcher)``): what the session asks of them."""

    async def handle(self, command: cmd.Command) -> None:
        """Every command after login but CAPABILITY, NOOP, LOGOUT, ID and IDLE; answers
        tagged itself."""

    def watch_dirs(self) -> list[str]:
        """The Maildir directories IDLE waits on (empty: nothing selected)."""

    async def poll(self) -> None:
        """Send the untagged updates (EXISTS, EXPUNGE, FETCH) of the selected folder."""

    async def close(self) -> None:
        """The session ends."""


__all__ = ["HANDSHAKE_SECONDS", "ImapSession"]

log = logging.getLogger("qtoaster.imapd")
_ids = itertools.count(1)
# The most a TLS handshake may take (STARTTLS, imaps), or the timeout if that is shorter.
HANDSHAKE_SECONDS = 60.0
# IDLE polls the selected folder this often even without a watcher's wake-up (a Maildir
# on a network filesystem sends no inotify events) ...
IDLE_POLL_SECONDS = 30.0
# ... and says it is alive this often (NAT and firewalls drop silent connections).
IDLE_KEEPALIVE_SECONDS = 120.0
# Before login a session needs no 30 minutes (RFC 9051 5.4 asks that only of logged-in
# sessions): a connection that never logs in is let go after this, or the timeout.
PRELOGIN_SECONDS = 180.0
_ANY_STATE = (cmd.Capability, cmd.Noop, cmd.Logout, cmd.Id)


class ImapSession(EngineDriver[ImapConnection]):
    __slots__ = (
        "commands",
        "ctx",
        "idle_tag",
        "idle_task",
        "idling",
        "kind",
        "login",
        "mail",
        "polling",
        "remote_ip",
        "started",
        "stopping",
        "tls",
        "user",
        "watcher",
    )

    need_data: ClassVar[object] = NEED_DATA
    log: ClassVar[logging.Logger] = log
    idle_seconds: ClassVar[float] = 1800.0

    def __init__(self, ctx: ImapContext, sessions: set[ImapSession], kind: str) -> None:
        settings = ctx.settings
        conn = ImapConnection(
            tls=kind == "imaps", max_line=settings.max_line, max_literal=settings.max_literal
        )
        super().__init__(conn, sessions, f"imap:{os.getpid()}:{next(_ids)}")
        self.ctx = ctx
        self.kind = kind
        self.tls = False  # set when a handshake (imaps, STARTTLS) succeeded
        self.remote_ip = "unknown"
        self.user: str | None = None
        self.mail: MailHandlers | None = None
        self.watcher: Any = None
        self.login = Login(self)
        self.commands = 0
        self.started = time.monotonic()
        self.idling = False
        self.idle_tag = ""
        self.idle_task: asyncio.Task[None] | None = None
        self.polling = False  # the IDLE task is inside mail.poll()
        self.stopping = False  # DONE came: the IDLE task ends after its poll

    # -- asyncio callbacks -----------------------------------------------------------
    def connection_made(self, base: asyncio.BaseTransport) -> None:
        super().connection_made(base)
        transport = cast(asyncio.Transport, base)
        self.remote_ip = peer_ip(transport)
        self.sessions.add(self)
        if self.kind == "imaps":
            if self.ctx.tls is None:
                log.warning("imapd %s imaps without TLS: %s", self.id, self.ctx.tls_problem)
                transport.abort()
                return
            self.begin_tls(implicit=True)
            return
        self.greet()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._stop_idle_task()
        if self.user is not None:
            log.info(
                "imapd %s end user=%s client=%s commands=%d seconds=%.1f",
                self.id,
                self.user,
                self.remote_ip,
                self.commands,
                time.monotonic() - self.started,
            )
        mail, self.mail = self.mail, None
        watcher, self.watcher = self.watcher, None
        if mail is not None:
            task = asyncio.get_running_loop().create_task(self._close_mail(mail, watcher))
            _closing.add(task)
            task.add_done_callback(_closing.discard)

    async def _close_mail(self, mail: MailHandlers, watcher: Any) -> None:
        try:
            await mail.close()
        except Exception:
            log.exception("imapd %s closing the mailbox", self.id)
        finally:
            if watcher is not None:
                watcher.close()

    def greet(self) -> None:
        caps = " ".join(self.login.capabilities())
        self.conn.untagged(f"OK [CAPABILITY {caps}] qtoaster ready.")
        self.flush()

    def idle_limit(self) -> float:
        settings = self.ctx.settings
        if self.idling:
            return float(settings.idle_timeout)
        if self.user is None:
            return min(float(settings.timeout), PRELOGIN_SECONDS)
        return float(settings.timeout)

    def timed_out(self) -> None:
        log.info("imapd %s timeout user=%s client=%s", self.id, self.user or "-", self.remote_ip)
        self.bye("Autologout; idle for too long")

    def shut_down(self) -> None:
        self.bye("Server shutting down")

    def bye(self, text: str) -> None:
        """``* BYE text`` (RFC 9051 7.1.5), then close."""
        self.conn.untagged(f"BYE {text}")
        self.flush()
        self.close()

    async def drain(self) -> None:
        """Write what the engine holds; wait while the client has not read enough."""
        self.flush()
        if self.writing_paused:
            await self.wait_drained()

    # -- the engine's events -----------------------------------------------------------
    def handle(self, event: object) -> None:
        if isinstance(event, cmd.Command):
            self.commands += 1
            self.command(event)
        elif isinstance(event, AuthLine):
            self.login.auth_line(event.text)
        elif isinstance(event, cmd.IdleDone):
            # bad: the engine already answered the line that was not DONE (tag BAD).
            self.wait_for(self._end_idle(answer=not event.bad))
        elif isinstance(event, ConnectionClosed):
            self.close()
        else:  # pragma: no cover - the engine's event set is closed
            raise AssertionError(f"unexpected event {event!r}")

    def command(self, command: cmd.Command) -> None:
        tag, body = command.tag, command.body
        if isinstance(body, _ANY_STATE):
            self.any_state(tag, body)
        elif self.user is None:
            if isinstance(body, cmd.Login):
                self.login.login(tag, body)
            elif isinstance(body, cmd.Authenticate):
                self.login.authenticate(tag, body)
            elif isinstance(body, cmd.StartTls):
                self.login.starttls(tag)
            else:  # the engine refuses these itself; kept for a command it lets through
                self.conn.tagged(tag, "BAD", "Log in first")
        elif isinstance(body, cmd.Idle):
            self.start_idle(tag)
        elif isinstance(body, cmd.Login | cmd.Authenticate | cmd.StartTls):
            self.conn.tagged(tag, "BAD", "Already logged in")
        else:
            assert self.mail is not None
            self.wait_for(self.mail.handle(command))

    def any_state(self, tag: str, body: object) -> None:
        if isinstance(body, cmd.Capability):
            self.conn.untagged("CAPABILITY " + " ".join(self.login.capabilities()))
            self.conn.tagged(tag, "OK", "CAPABILITY completed")
        elif isinstance(body, cmd.Noop):
            if self.mail is not None:
                self.wait_for(self._noop(tag, self.mail))
            else:
                self.conn.tagged(tag, "OK", "NOOP completed")
        elif isinstance(body, cmd.Logout):
            self.conn.state = State.LOGOUT
            self.conn.untagged("BYE Logging out")
            self.conn.tagged(tag, "OK", "LOGOUT completed")
            self.flush()
            self.close()
        else:
            assert isinstance(body, cmd.Id)
            if body.params:
                fields = " ".join(f"{k}={v}" for k, v in body.params)
                log.debug("imapd %s client id %s", self.id, fields)
            self.conn.untagged('ID ("name" "qtoaster")')
            self.conn.tagged(tag, "OK", "ID completed")

    async def _noop(self, tag: str, mail: MailHandlers) -> None:
        await mail.poll()
        self.conn.tagged(tag, "OK", "NOOP completed")

    # -- login ---------------------------------------------------------------------------
    def logged_in(self, user: str, store: Any, watcher: Any) -> None:
        """The login succeeded and the store is open: the mail handlers take over."""
        from qtoaster.imapd.mailsession import MailSession

        self.user = user
        self.watcher = watcher
        self.mail = MailSession(self, store, watcher)
        self.conn.state = State.AUTHENTICATED

    def mail_capabilities(self) -> list[str]:
        """What the mail handlers offer (their ``CAPABILITIES``), for CAPABILITY after login."""
        return list(getattr(self.mail, "CAPABILITIES", ()))

    # -- IDLE (RFC 2177) -------------------------------------------------------------------
    def start_idle(self, tag: str) -> None:
        self.conn.continuation("idling")
        self.conn.start_idle()
        self.idling, self.idle_tag, self.stopping = True, tag, False
        self.idle_task = asyncio.get_running_loop().create_task(self._idle())

    async def _idle(self) -> None:
        mail, watcher = self.mail, self.watcher
        assert mail is not None
        said = time.monotonic()
        try:
            while not self.stopping:
                dirs = mail.watch_dirs()
                if dirs:
                    await watcher.wait(dirs, IDLE_POLL_SECONDS)
                else:  # nothing selected: nothing to report, only DONE to wait for
                    await asyncio.sleep(IDLE_POLL_SECONDS)
                if dirs:  # woken or not: a network filesystem wakes nobody
                    self.polling = True
                    try:
                        await mail.poll()
                    finally:
                        self.polling = False
                if time.monotonic() - said >= IDLE_KEEPALIVE_SECONDS:
                    self.conn.untagged("OK Still here")
                    said = time.monotonic()
                self.flush()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("imapd %s internal error while idling", self.id)
            self.internal_error()

    async def _end_idle(self, *, answer: bool = True) -> None:
        """DONE: stop the IDLE task between polls, then the tagged OK."""
        task, self.idle_task = self.idle_task, None
        self.stopping = True
        if task is not None:
            if not self.polling:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.idling = False
        if answer:
            self.conn.tagged(self.idle_tag, "OK", "IDLE terminated")

    def _stop_idle_task(self) -> None:
        task, self.idle_task = self.idle_task, None
        if task is not None:
            task.cancel()

    # -- TLS: STARTTLS (RFC 9051 6.2.1) and imaps ------------------------------------------
    def begin_tls(self, *, implicit: bool) -> None:
        assert self.ctx.tls is not None
        # The ClientHello is for TLS, not the engine: from here on TLS reads the socket.
        upgrade.start(
            self,
            self.ctx.tls,
            timeout=min(HANDSHAKE_SECONDS, self.idle_limit()),
            who=f"{self.id} client={self.remote_ip}",
            discard=self.conn.discard_input,
            done=lambda: self._tls_started(implicit),
        )

    def _tls_started(self, implicit: bool) -> None:
        self.tls = True
        if implicit:
            self.greet()
        else:
            self.conn.start_tls_done()


# Tasks closing ended sessions' mail handlers: held so that they are not collected midway.
_closing: set[asyncio.Task[None]] = set()
