"""The not-authenticated half of an IMAP session: CAPABILITY's list, LOGIN, AUTHENTICATE,
STARTTLS, and opening the logged-in user's store (RFC 9051 6.1, 6.2).

A part held by :class:`qtoaster.imapd.session.ImapSession`, which owns the connection, the
TLS upgrade and the mail handlers; this part keeps only the login's own state (a SASL
exchange and its tag, the failures counted). The login is verified by the auth role
(qtoaster.authd, service ``imap``: it counts failures with SMTP's and POP3's in one
throttle and waits out the throttle's delay before a failure's answer; a success comes
with a ticket for that user's Maildir). imapd cannot read a Maildir (decision 0007): the
mailbox broker redeems the ticket and does each file operation of the store for it
(broker/fsclient.py).

Invariants:
- LOGIN, AUTHENTICATE PLAIN and LOGIN need TLS unless ``[imapd] allow_plaintext_login``;
  then LOGINDISABLED is advertised and they answer ``NO [PRIVACYREQUIRED]``; CRAM-MD5 is
  offered only while some account keeps secrets (as pop3d decides it);
- a failed login answers ``NO [AUTHENTICATIONFAILED]`` after the throttle's delay (the
  auth role's); ``[auth] max_failures`` of them end the session; a directory, broker or
  auth role that fails answers ``NO [UNAVAILABLE]``;
- after STARTTLS's tagged OK nothing the client sent in clear text becomes a command
  (RFC 9051 6.2.1: the engine drops it), and the capabilities are asked again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from qtoaster.core.errors import TemporaryFailure
from qtoaster.core.logfields import fields
from qtoaster.maildir.storeapi import StoreError
from qtoaster.metrics import definitions as metrics
from qtoaster.net.loginlog import login_fields
from qtoaster.protocols import sasl
from qtoaster.protocols.imap import commands as cmd
from qtoaster.protocols.sasl import (
    Challenge,
    CramCredentials,
    Failure,
    Mechanism,
    PlainCredentials,
    SaslServer,
)

if TYPE_CHECKING:
    from qtoaster.imapd.session import ImapSession

log = logging.getLogger("qtoaster.imapd")

# Offered in every state (RFC 9051 7.2.2 lists what a client may rely on): the revisions
# and what the session itself implements before login.
BASE_CAPABILITIES = ("IMAP4rev1", "IMAP4rev2", "SASL-IR", "ID", "ENABLE", "LITERAL+")
# After login: what the session implements itself (IDLE, RFC 2177) and APPENDLIMIT (RFC
# 7889: the engine refuses a longer literal). The mail handlers (imapd/mail*.py) add
# theirs at merge: MOVE, UIDPLUS, NAMESPACE, ...
SESSION_CAPABILITIES = ("IDLE",)

Outcome = Challenge | PlainCredentials | CramCredentials | Failure


class Login:
    """The NOT AUTHENTICATED state's commands for one session."""

    __slots__ = ("challenge", "failures", "sasl", "session", "tag")

    def __init__(self, session: ImapSession) -> None:
        self.session = session
        self.sasl: SaslServer | None = None
        self.tag = ""  # the AUTHENTICATE in progress
        self.challenge = b""
        self.failures = 0

    # -- what is offered ------------------------------------------------------------------
    def plaintext_ok(self) -> bool:
        return self.session.tls or self.session.ctx.settings.allow_plaintext_login

    def capabilities(self) -> list[str]:
        session = self.session
        caps = list(BASE_CAPABILITIES)
        if session.user is None:
            if session.ctx.tls is not None and not session.tls:
                caps.append("STARTTLS")
            if self.plaintext_ok():
                caps += ["AUTH=PLAIN", "AUTH=LOGIN"]
            else:
                caps.append("LOGINDISABLED")
            if session.ctx.secrets[0]:
                caps.append("AUTH=CRAM-MD5")
        else:
            caps += SESSION_CAPABILITIES
            caps.append(f"APPENDLIMIT={session.ctx.settings.max_literal}")
            caps += session.mail_capabilities()
        return caps

    # -- STARTTLS ---------------------------------------------------------------------------
    def starttls(self, tag: str) -> None:
        session = self.session
        if session.tls:  # the engine refuses it after TLS; a second one is a client bug
            session.conn.tagged(tag, "BAD", "TLS is already active")
        elif session.ctx.tls is None:
            session.conn.tagged(tag, "NO", f"TLS not available: {session.ctx.tls_problem}")
        else:
            session.conn.tagged(tag, "OK", "Begin TLS negotiation now")
            session.flush()
            session.conn.start_tls()  # drops what the client pipelined in clear text
            session.begin_tls(implicit=False)

    # -- LOGIN ------------------------------------------------------------------------------
    def login(self, tag: str, body: cmd.Login) -> None:
        if not self.plaintext_ok():
            self.session.conn.tagged(
                tag, "NO", "Plain text login needs TLS first (STARTTLS)", "PRIVACYREQUIRED"
            )
            return
        self.session.wait_for(self._verified(tag, "PLAIN", body.user, body.password, b""))

    # -- AUTHENTICATE -----------------------------------------------------------------------
    def authenticate(self, tag: str, body: cmd.Authenticate) -> None:
        session = self.session
        mechanism = sasl.parse_mechanism(body.mechanism)
        if mechanism is Mechanism.CRAM_MD5 and session.ctx.secrets[0]:
            challenge = sasl.cram_challenge(os.getpid(), int(time.time()), session.ctx.hostname)
            self.sasl = SaslServer(mechanism, cram_challenge=challenge)
        elif mechanism in (Mechanism.PLAIN, Mechanism.LOGIN) and self.plaintext_ok():
            self.sasl = SaslServer(mechanism)
        elif mechanism in (Mechanism.PLAIN, Mechanism.LOGIN):
            session.conn.tagged(
                tag, "NO", "Plain text login needs TLS first (STARTTLS)", "PRIVACYREQUIRED"
            )
            return
        else:
            session.conn.tagged(tag, "NO", "Unsupported authentication mechanism", "CANNOT")
            return
        self.tag = tag
        self.step(self.sasl.start(body.initial))

    def auth_line(self, text: str) -> None:
        exchange = self.sasl
        self.step(exchange.step(text) if exchange is not None else Failure(sasl.MALFORMED))

    def step(self, outcome: Outcome) -> None:
        session = self.session
        if isinstance(outcome, Challenge):
            session.conn.continuation(outcome.text)
            session.conn.expect_auth_line()
            return
        self.sasl, tag = None, self.tag
        if isinstance(outcome, Failure):  # RFC 9051 6.2.2: cancelled or not base64: BAD
            text = "Authentication cancelled" if outcome.reply is sasl.CANCELED else None
            session.conn.tagged(tag, "BAD", text or "Malformed authentication data")
        elif isinstance(outcome, CramCredentials):
            session.wait_for(
                self._verified(tag, "CRAM-MD5", outcome.user, outcome.digest, outcome.challenge)
            )
        else:
            session.wait_for(self._verified(tag, "PLAIN", outcome.user, outcome.password, b""))

    # -- verifying and opening the store ----------------------------------------------------
    async def _verified(
        self, tag: str, mechanism: str, user: str, secret: str, challenge: bytes
    ) -> None:
        session = self.session
        result = await session.ctx.auth.verify(
            service="imap",
            mechanism=mechanism,
            user=user,
            secret=secret,
            challenge=challenge,
            ip=session.remote_ip,
        )
        if result.temporary:
            log.warning(
                "auth.busy %s" if result.busy else "auth.unavailable %s",
                fields(session=session.id, error=result.reason),
            )
            text = (
                "Too many logins at once from your address, try again later"
                if result.busy
                else "Unable to check the password now, try again later"
            )
            session.conn.tagged(tag, "NO", text, "UNAVAILABLE")
            return
        metrics.auth("imap", result.ok)
        if not result.ok:
            log.info(
                "login.failed %s",
                login_fields(
                    "imap",
                    session.id,
                    result.user or user,
                    session.remote_ip,
                    session.transport,
                    result.reason,
                ),
            )
            self.failures += 1  # the auth role already waited out the throttle's delay
            session.conn.tagged(tag, "NO", "Authentication failed.", "AUTHENTICATIONFAILED")
            if self.failures >= session.ctx.config.settings.auth_max_failures:
                session.conn.untagged("BYE Too many authentication failures")
                session.flush()
                session.close()
            return
        try:
            store, watcher = await open_store(session, result.ticket)
        except (TemporaryFailure, OSError, StoreError) as exc:
            log.warning(
                "mailbox.unavailable %s", fields(session=session.id, user=result.user, error=exc)
            )
            session.conn.tagged(tag, "NO", "Unable to open your mailbox now", "UNAVAILABLE")
            return
        if not session.is_open:  # the client left meanwhile
            watcher.close()
            store_close = getattr(store, "close", None)
            if store_close is not None:
                store_close()
            return
        session.logged_in(result.user, store, watcher)
        log.info(
            "login.ok %s",
            login_fields(
                "imap",
                session.id,
                result.user,
                session.remote_ip,
                session.transport,
            ),
        )
        caps = " ".join(self.capabilities())
        session.conn.tagged(tag, "OK", "Logged in", f"CAPABILITY {caps}")


async def open_store(session: ImapSession, ticket: str) -> tuple[Any, Any]:
    """The logged-in user's store and watcher, through the mailbox broker.

    As pop3d, imapd always goes through the broker (started as root or not: the same path
    is taken, decision 0007), so imapd never needs to read a Maildir. The broker's
    client is blocking (one request, one answer): opened in the executor."""
    from qtoaster.broker.fsclient import BrokerFs, BrokerWatcher
    from qtoaster.maildir.store import MaildirStore

    loop = asyncio.get_running_loop()
    ctx = session.ctx
    fs = await loop.run_in_executor(ctx.executor, BrokerFs.open, ctx.broker, ticket)
    store = MaildirStore(fs)
    # The first login creates Sent, Drafts, Trash, Junk and Archive (once per mailbox).
    await loop.run_in_executor(ctx.executor, store.prepare)
    return store, BrokerWatcher(fs)
