"""The TLS and AUTH half of an SMTP session: STARTTLS, SMTPS, the SASL exchange.

A mixin of :class:`qtoaster.smtpd.session.SmtpSession` (which owns the transport, the
engine and the transaction); kept apart so each file has one job.  Rules in
``smtpd/auth.py`` and docs/tls.md.

Invariants:
- nothing the client sent in clear text before the handshake becomes a command: the
  engine drops its buffer at the 220 and reading is paused until TLS owns the socket;
- passwords are checked in a lookup thread, never on the event loop; a failure is
  answered only after the throttle's delay, and too many end the session;
- after STARTTLS the session forgets HELO, the transaction and any AUTH (RFC 3207 4.2).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from functools import partial
from typing import TYPE_CHECKING, cast

from qtoaster.auth.verify import verify
from qtoaster.core.errors import TemporaryFailure
from qtoaster.core.reply import Reply
from qtoaster.directory.schema import UserFlag
from qtoaster.policy.checks.rcpthosts import NOGATEWAY
from qtoaster.protocols.sasl import (
    AUTH_FAILED,
    AUTH_NOT_AVAILABLE,
    AUTH_OK,
    Challenge,
    CramCredentials,
    Failure,
    PlainCredentials,
    SaslServer,
)
from qtoaster.protocols.smtp import events as ev
from qtoaster.protocols.smtp.server import ServerConnection
from qtoaster.smtpd import auth
from qtoaster.tls import upgrade
from qtoaster.tls.server import client_cert_relay, describe

if TYPE_CHECKING:
    from qtoaster.smtpd.context import SmtpdContext

log = logging.getLogger("qtoaster.smtpd")
SaslStep = Challenge | PlainCredentials | CramCredentials | Failure


class SecureSession:
    # Provided by SmtpSession.
    ctx: SmtpdContext
    conn: ServerConnection
    transport: asyncio.Transport | None
    busy: bool
    task: asyncio.Task[None] | None
    id: str
    remote_ip: str
    sender: str | None
    env: Mapping[str, str]
    base_env: Mapping[str, str]
    last_activity: float
    tls_protocol: str | None
    auth_user: str | None
    sasl: SaslServer | None
    auth_failures: int

    def _flush(self) -> None: ...
    def _resume(self) -> None: ...
    def _reset(self) -> None: ...
    def _connect(self) -> None: ...

    def _offer(self) -> auth.Offer:
        shared = self.ctx.shared
        return auth.offer(
            tls_active=self.tls_protocol is not None,
            tls_available=self.ctx.tls is not None,
            allow_plaintext=self.ctx.config.settings.auth_allow_plaintext,
            cram=shared is not None and shared.cram_available,
        )

    # -- AUTH (smtpd/auth.py) -------------------------------------------------
    def _auth_begin(self, event: ev.Auth) -> None:
        if self.ctx.shared is None:
            self.conn.send(AUTH_NOT_AVAILABLE)
            return
        started = auth.begin(
            event.mechanism,
            self._offer(),
            authenticated=self.auth_user is not None,
            in_transaction=self.sender is not None,
            hostname=self.ctx.config.controls.me,
        )
        if isinstance(started, Reply):
            self.conn.send(started)
            return
        self.sasl = started
        self._auth_answer(started.start(event.initial_response))

    def _auth_answer(self, step: SaslStep) -> None:
        if isinstance(step, Challenge):
            self.conn.send(Reply(334, step.text))  # the engine reads the next line raw
            return
        self.sasl = None
        if isinstance(step, Failure):
            self.conn.send(step.reply)
            return
        self.busy = True
        self.task = asyncio.get_running_loop().create_task(self._auth_verify(step))

    async def _auth_verify(self, credentials: PlainCredentials | CramCredentials) -> None:
        """Check the credentials in a lookup thread (argon2 is slow), wait out the
        throttle's delay, answer 235 or 535; too many failures end the session."""
        shared = self.ctx.shared
        assert shared is not None
        loop = asyncio.get_running_loop()
        close = False
        try:
            result = await loop.run_in_executor(
                shared.lookup_executor,
                partial(
                    verify,
                    shared.directory,
                    credentials,
                    service="smtp",
                    default_domain=self.ctx.config.controls.defaultdomain,
                ),
            )
        except TemporaryFailure as exc:
            log.warning("%s auth unavailable: %s", self.id, exc)
            reply = auth.AUTH_UNAVAILABLE
            delay = 0.0
        else:
            throttle = shared.throttle
            if result.ok:
                delay = throttle.delay_for(self.remote_ip, result.user)
                throttle.succeeded(self.remote_ip, result.user)
                self.auth_user = result.user
                if not result.flags & UserFlag.NO_RELAY:  # spec 6.2: as if RELAYCLIENT=""
                    self.env = {**self.base_env, "RELAYCLIENT": ""}
                log.info("%s auth ok user=%s client=%s", self.id, result.user, self.remote_ip)
                reply = AUTH_OK
            else:
                throttle.failed(self.remote_ip, result.user)
                delay = throttle.delay_for(self.remote_ip, result.user)
                self.auth_failures += 1
                close = throttle.session_exhausted(self.auth_failures)
                log.info(
                    "%s auth failed user=%s client=%s reason=%s",
                    self.id,
                    result.user,
                    self.remote_ip,
                    result.reason,
                )
                reply = AUTH_FAILED
        if delay:
            await asyncio.sleep(delay)
        self.busy = False
        self.last_activity = time.monotonic()
        if self.transport is None or self.transport.is_closing():
            return
        self.conn.send(reply)
        if close:
            self._flush()
            self.transport.close()
            return
        self._resume()

    # -- STARTTLS and SMTPS ------------------------------------------------------
    def _starttls(self) -> None:
        if self.ctx.tls is None:
            self.conn.send(Reply(454, f"TLS {self.ctx.tls_problem} (#4.3.0)"))
            return
        self.conn.send(auth.TLS_READY)  # the engine drops what it buffered (injection)
        self._flush()
        self._begin_tls(implicit=False)

    def _begin_tls(self, *, implicit: bool) -> None:
        """Hand the connection to TLS.  Reading stops now, before the loop can run again:
        the client's ClientHello must reach the TLS layer, not the clear-text engine (which
        would discard it as injected input, and the handshake would never start)."""
        assert self.transport is not None
        upgrade.hold(self.transport)
        self.busy = True
        self.task = asyncio.get_running_loop().create_task(self._start_tls(implicit=implicit))

    async def _start_tls(self, *, implicit: bool) -> None:
        transport, tls = self.transport, self.ctx.tls
        assert transport is not None and tls is not None
        # Nothing sent in clear text before the handshake may become a command (RFC 3207
        # 5): the engine dropped its buffer at the 220 and reading has been paused since;
        # dropped again here, with no await between this and start_tls taking the socket.
        self.conn.discard_input()
        upgraded = await upgrade.handshake(
            transport,
            cast(asyncio.BaseProtocol, self),
            tls,
            timeout=max(self.ctx.config.controls.timeoutsmtpd, 1),
            who=f"{self.id} client={self.remote_ip}",
        )
        if upgraded is None:
            return
        self.transport = upgraded
        ssl_object = upgraded.get_extra_info("ssl_object")
        # Spec 7.3: a client certificate from clientca.pem whose emailAddress is listed in
        # control/tlsclients may relay.  Asked for at the handshake (TLS 1.3 has no
        # renegotiation, docs/tls.md), so decided here once for the session.
        relays, cert_email = False, ""
        if self.ctx.tls_clients:
            relays, cert_email = client_cert_relay(ssl_object, self.ctx.config.home.control)
            if relays:
                self.base_env = {**self.base_env, "RELAYCLIENT": ""}
                log.info("%s relay by certificate %s", self.id, cert_email)
            else:
                # qmail extends the relay refusal with why the certificate did not do (7.3).
                self.base_env = {**self.base_env, NOGATEWAY: cert_email}
        self.tls_protocol = describe(ssl_object, cert_email if relays else None)
        self.busy = False
        self.last_activity = time.monotonic()
        self.env = self.base_env
        if implicit:
            self._connect()  # the CONNECT checks and the greeting come after the handshake
        else:
            # RFC 3207 4.2: forget what the client said before; the engine forgets HELO.
            self.conn.start_tls_done()
            self.auth_user, self.sasl = None, None
            self._reset()
        self._resume()
