"""The TLS and AUTH half of an SMTP session: STARTTLS, SMTPS, the SASL exchange.

A part of :class:`qtoaster.smtpd.session.SmtpSession` (which owns the transport, the
engine and the transaction); this part owns what TLS and AUTH learn about the client
(the TLS description, the authenticated user, the connection's variables before AUTH)
and writes nothing itself.  Rules in ``smtpd/auth.py`` and docs/tls.md.

Invariants:
- nothing the client sent in clear text before the handshake becomes a command: the
  engine drops its buffer at the 220 and reading is paused until TLS owns the socket;
- passwords are checked by the auth role (qtoaster.authd), which answers a failure only
  after the throttle's delay; too many failures end the session; an auth role that cannot
  be asked gives ``454`` (never an acceptance);
- after STARTTLS the session forgets HELO, the transaction and any AUTH (RFC 3207 4.2).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, cast

from qtoaster.core.logfields import fields
from qtoaster.core.reply import Reply
from qtoaster.directory.schema import UserFlag
from qtoaster.metrics import definitions as metrics
from qtoaster.net.loginlog import login_fields
from qtoaster.policy.checks.rcpthosts import NOGATEWAY
from qtoaster.protocols.sasl import (
    AUTH_FAILED,
    AUTH_NOT_AVAILABLE,
    AUTH_OK,
    MALFORMED,
    Challenge,
    CramCredentials,
    Failure,
    PlainCredentials,
    SaslServer,
)
from qtoaster.protocols.smtp import events as ev
from qtoaster.smtpd import auth
from qtoaster.tls import upgrade
from qtoaster.tls.server import client_cert_relay, describe

if TYPE_CHECKING:
    from qtoaster.smtpd.session import SmtpSession

log = logging.getLogger("qtoaster.smtpd")
SaslStep = Challenge | PlainCredentials | CramCredentials | Failure


class SecureSession:
    __slots__ = ("_failures", "_sasl", "_session", "auth_user", "base_env", "tls_protocol")

    def __init__(self, session: SmtpSession) -> None:
        self._session = session
        self.base_env: Mapping[str, str] = {}  # the connection's variables, before AUTH
        self.tls_protocol: str | None = None  # Received's "(<version> <cipher> encrypted) SMTP"
        self.auth_user: str | None = None
        self._sasl: SaslServer | None = None
        self._failures = 0

    def offer(self) -> auth.Offer:
        session = self._session
        shared = session.ctx.shared
        return auth.offer(
            tls_active=self.tls_protocol is not None,
            tls_available=session.ctx.tls is not None,
            allow_plaintext=session.ctx.config.settings.auth_allow_plaintext,
            cram=shared is not None and shared.cram_available,
        )

    # -- AUTH (smtpd/auth.py) -------------------------------------------------
    def auth_begin(self, event: ev.Auth) -> None:
        session = self._session
        if session.ctx.shared is None:
            session.conn.send(AUTH_NOT_AVAILABLE)
            return
        started = auth.begin(
            event.mechanism,
            self.offer(),
            authenticated=self.auth_user is not None,
            in_transaction=session.sender is not None,
            hostname=session.ctx.config.controls.me,
        )
        if isinstance(started, Reply):
            session.conn.send(started)
            return
        self._sasl = started
        self.auth_answer(started.start(event.initial_response))

    def auth_line(self, data: str) -> None:
        """A line of the SASL exchange (the client's answer to a 334 challenge)."""
        self.auth_answer(self._sasl.step(data) if self._sasl else Failure(MALFORMED))

    def auth_answer(self, step: SaslStep) -> None:
        session = self._session
        if isinstance(step, Challenge):
            session.conn.send(Reply(334, step.text))  # the engine reads the next line raw
            return
        self._sasl = None
        if isinstance(step, Failure):
            session.conn.send(step.reply)
            return
        session.busy = True
        session.task = asyncio.get_running_loop().create_task(self._auth_verify(step))

    async def _auth_verify(self, credentials: PlainCredentials | CramCredentials) -> None:
        """Ask the auth role (it checks, and answers after the throttle's delay), then
        answer 235 or 535; too many failures end the session."""
        session = self._session
        shared = session.ctx.shared
        assert shared is not None
        close = False
        if isinstance(credentials, CramCredentials):
            mechanism, secret = "CRAM-MD5", credentials.digest
            challenge = credentials.challenge
        else:
            mechanism, secret, challenge = "PLAIN", credentials.password, b""
        result = await shared.auth.verify(
            service="smtp",
            mechanism=mechanism,
            user=credentials.user,
            secret=secret,
            challenge=challenge,
            ip=session.remote_ip,
        )
        if not result.temporary:
            metrics.auth("smtp", result.ok)
        if result.temporary:
            log.warning(
                "auth.unavailable %s",
                fields(session=session.id, client=session.remote_ip, error=result.reason),
            )
            reply = auth.AUTH_BUSY if result.busy else auth.AUTH_UNAVAILABLE
        elif result.ok:
            self.auth_user = result.user
            if not UserFlag(result.flags) & UserFlag.NO_RELAY:  # spec 6.2: RELAYCLIENT=""
                session.env = {**self.base_env, "RELAYCLIENT": ""}
            log.info(
                "login.ok %s",
                login_fields(
                    "smtp",
                    session.id,
                    result.user,
                    session.remote_ip,
                    session.transport,
                ),
            )
            reply = AUTH_OK
        else:
            self._failures += 1
            close = self._failures >= session.ctx.config.settings.auth_max_failures
            log.info(
                "login.failed %s",
                login_fields(
                    "smtp",
                    session.id,
                    result.user,
                    session.remote_ip,
                    session.transport,
                    result.reason,
                ),
            )
            reply = AUTH_FAILED
        session.busy = False
        session.last_activity = time.monotonic()
        if session.transport is None or session.transport.is_closing():
            return
        session.conn.send(reply)
        if close:
            session.write(session.conn.data_to_send(), close=True)
            return
        session.resume()

    # -- STARTTLS and SMTPS ------------------------------------------------------
    def starttls(self) -> None:
        session = self._session
        if session.ctx.tls is None:
            session.conn.send(Reply(454, f"TLS {session.ctx.tls_problem} (#4.3.0)"))
            return
        session.conn.send(auth.TLS_READY)  # the engine drops what it buffered (injection)
        session.flush()
        self.begin_tls(implicit=False)

    def begin_tls(self, *, implicit: bool) -> None:
        """Hand the connection to TLS.  Reading stops now, before the loop can run again:
        the client's ClientHello must reach the TLS layer, not the clear-text engine (which
        would discard it as injected input, and the handshake would never start)."""
        session = self._session
        transport, tls = session.transport, session.ctx.tls
        assert transport is not None and tls is not None
        # Nothing sent in clear text before the handshake may become a command (RFC 3207
        # 5): the engine dropped its buffer at the 220; from hold() on TLS reads the socket.
        held = upgrade.hold(
            transport,
            cast(asyncio.BaseProtocol, session),
            tls,
            timeout=max(session.ctx.config.controls.timeoutsmtpd, 1),
        )
        session.conn.discard_input()
        session.busy = True
        session.task = asyncio.get_running_loop().create_task(
            self._start_tls(held, implicit=implicit)
        )

    async def _start_tls(self, held: upgrade.Held, *, implicit: bool) -> None:
        session = self._session
        upgraded = await upgrade.handshake(held, who=f"{session.id} client={session.remote_ip}")
        if upgraded is None:
            return
        session.transport = upgraded
        ssl_object = upgraded.get_extra_info("ssl_object")
        # Spec 7.3: a client certificate from clientca.pem whose emailAddress is listed in
        # control/tlsclients may relay.  Asked for at the handshake (TLS 1.3 has no
        # renegotiation, docs/tls.md), so decided here once for the session.
        relays, cert_email = False, ""
        if session.ctx.tls_clients is not None:
            relays, cert_email = client_cert_relay(ssl_object, session.ctx.tls_clients)
            if relays:
                self.base_env = {**self.base_env, "RELAYCLIENT": ""}
                log.info("relay.certificate %s", fields(session=session.id, email=cert_email))
            else:
                # qmail extends the relay refusal with why the certificate did not do (7.3).
                self.base_env = {**self.base_env, NOGATEWAY: cert_email}
        self.tls_protocol = describe(ssl_object, cert_email if relays else None)
        session.busy = False
        session.last_activity = time.monotonic()
        session.env = self.base_env
        if implicit:
            session.screen()  # the CONNECT checks and the greeting come after the handshake
        else:
            # RFC 3207 4.2: forget what the client said before; the engine forgets HELO.
            session.conn.start_tls_done()
            self.auth_user, self._sasl = None, None
            session.reset()
        session.resume()
