"""The AUTHORIZATION half of a POP3 session: CAPA, USER/PASS, APOP, AUTH, STLS (spec 19.2-19.4).

A part held by :class:`qtoaster.pop3d.session.Pop3Session`, which owns the connection, the
mailbox and its lock; this part keeps only the login's own state (a SASL exchange, the
failures counted). The login
is verified by the auth role (qtoaster.authd, which also waits out the throttle's delay
before a failure's answer; a success comes with a ticket for that user's Maildir), then the
mailbox broker (qtoaster.mailboxd: pop3d cannot read a Maildir, decision 0007) redeems the
ticket, locks the Maildir (one session per mailbox: ``-ERR [IN-USE]``) and scans it, and
only then ``+OK ``.

Invariants:
- plain-text logins (USER/PASS, AUTH PLAIN) need TLS unless ``[auth] allow_plaintext``;
  APOP and CRAM-MD5 need an account that keeps secrets (docs/directory.md);
- a failed login is answered after the throttle's delay (taken by the auth role);
  ``[auth] max_failures`` of them end the session (qmail-popup ended it at the first);
  accounts with NO_POP or DISABLED cannot log in;
- a directory, disk or auth role that fails answers ``-ERR [SYS/TEMP]`` and ends the
  session (so does an address with too many logins in flight);
- after STLS's +OK nothing the client sent in clear text becomes a command (RFC 2595 4).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from qtoaster.auth.protocol import VerifyResponse
from qtoaster.broker.client import BrokerError, BrokerMailbox, open_mailbox
from qtoaster.core.errors import TemporaryFailure
from qtoaster.core.logfields import fields
from qtoaster.metrics import definitions as metrics
from qtoaster.net.loginlog import login_fields
from qtoaster.pop3d.context import Pop3Context
from qtoaster.protocols import sasl
from qtoaster.protocols.pop3 import events as ev
from qtoaster.protocols.pop3.server import Pop3Connection
from qtoaster.protocols.sasl import (
    Challenge,
    CramCredentials,
    Failure,
    Mechanism,
    PlainCredentials,
    SaslServer,
)

if TYPE_CHECKING:
    from qtoaster.pop3d.session import Pop3Session

log = logging.getLogger("qtoaster.pop3d")


class Authorization:
    """The AUTHORIZATION state's commands for one session."""

    __slots__ = ("conn", "ctx", "failures", "sasl", "session")

    def __init__(self, session: Pop3Session) -> None:
        self.session = session
        self.ctx: Pop3Context = session.ctx
        self.conn: Pop3Connection = session.conn
        self.sasl: SaslServer | None = None
        self.failures = 0

    def plaintext_ok(self) -> bool:
        return self.conn.tls or self.ctx.config.settings.auth_allow_plaintext

    def _secrets(self) -> bool:
        return self.ctx.secrets[0]

    def capa(self) -> None:
        """The seed's CAPA lines, and what RFC 2449/2595 add, as really available."""
        lines = ["TOP", "UIDL", "LAST"]
        if self.session.mailbox is None:
            if self.plaintext_ok():
                lines.append("USER")
            if self._secrets():
                lines.append("APOP")
            mechanisms = (["CRAM-MD5"] if self._secrets() else []) + (
                ["PLAIN"] if self.plaintext_ok() else []
            )
            if mechanisms:
                lines.append("SASL " + " ".join(mechanisms))
            if self.ctx.tls is not None and not self.conn.tls:
                lines.append("STLS")
        lines += ["PIPELINING", "RESP-CODES", "AUTH-RESP-CODE", "IMPLEMENTATION qtoaster"]
        self.conn.multiline("Capability list follows", lines)

    def auth(self, event: ev.Auth) -> None:
        mechanism = sasl.parse_mechanism(event.mechanism)
        if mechanism is Mechanism.CRAM_MD5 and self._secrets():
            self.sasl = SaslServer(mechanism, cram_challenge=self.session.banner.encode())
        elif mechanism is Mechanism.PLAIN and self.plaintext_ok():
            self.sasl = SaslServer(mechanism)
        elif mechanism is Mechanism.PLAIN:
            self.conn.err("plain text login needs TLS first (STLS)", "AUTH")
            return
        else:
            self.conn.err("unimplemented")
            return
        self.sasl_step(self.sasl.start(event.initial_response))

    def sasl_step(self, step: Challenge | PlainCredentials | CramCredentials | Failure) -> None:
        if isinstance(step, Challenge):
            self.conn.challenge(step.text)
            return
        self.sasl = None
        if isinstance(step, Failure):
            # POP3 has no SMTP codes: qmail-popup answers -ERR (spec 19.4).
            self.conn.err(step.reply.text.split(" (#", 1)[0])
            return
        self.session.wait_for(self.login(step))

    async def login_apop(self, name: str, digest: str) -> None:
        await self._verified("APOP", name, digest, self.session.banner.encode())

    async def login(self, credentials: PlainCredentials | CramCredentials) -> None:
        if isinstance(credentials, CramCredentials):
            await self._verified(
                "CRAM-MD5", credentials.user, credentials.digest, credentials.challenge
            )
        else:
            await self._verified("PLAIN", credentials.user, credentials.password, b"")

    async def _verified(self, mechanism: str, user: str, secret: str, challenge: bytes) -> None:
        """Ask the auth role (it checks, and answers after the throttle's delay), then log
        in or count a failure."""
        result = await self.ctx.auth.verify(
            service="pop3",
            mechanism=mechanism,
            user=user,
            secret=secret,
            challenge=challenge,
            ip=self.session.remote_ip,
        )
        if result.temporary:
            self._unavailable(result.reason, busy=result.busy)
            return
        await self._logged_in_or_not(result)

    def _unavailable(self, problem: object, *, busy: bool = False) -> None:
        if busy:
            log.warning("auth.busy %s", fields(session=self.session.id, error=problem))
        else:
            log.warning("auth.unavailable %s", fields(session=self.session.id, error=problem))
        self.conn.close_after_send()
        if busy:
            self.conn.err("too many logins at once from your address, try again later", "SYS/TEMP")
        else:
            self.conn.err("unable to check the password now, try again later", "SYS/TEMP")
        self.session.flush()

    async def _logged_in_or_not(self, result: VerifyResponse) -> None:
        metrics.auth("pop3", result.ok)
        if not result.ok:
            log.info(
                "login.failed %s",
                login_fields(
                    "pop3",
                    self.session.id,
                    result.user,
                    self.session.remote_ip,
                    self.session.transport,
                    result.reason,
                ),
            )
            # The auth role waited out the throttle's delay before it answered.
            # qmail-popup closed the connection after one failure; we allow a few, like
            # SMTP AUTH ([auth] max_failures), so that a client whose strongest mechanism
            # fails (CRAM-MD5 for an account without secrets) can fall back to another.
            self.failures += 1
            if self.failures >= self.ctx.config.settings.auth_max_failures:
                self.conn.close_after_send()
            self.conn.err("authorization failed", "AUTH")
            self.session.flush()
            return
        await self._open_mailbox(result.user, result.ticket)

    async def _open_mailbox(self, address: str, ticket: str) -> None:
        loop = asyncio.get_running_loop()

        def open_it() -> tuple[BrokerMailbox | None, str]:
            """The broker's mailbox (locked for its connection), or None and qmail-pop3d's
            text (empty: in use); OSError when the broker cannot open it."""
            try:
                return open_mailbox(self.ctx.broker, ticket), ""
            except BrokerError as exc:
                answer = exc.answer
                if answer is None or answer.error not in ("in-use", "maildir"):
                    raise
                return None, answer.text if answer.error == "maildir" else ""

        try:
            mailbox, problem = await loop.run_in_executor(self.ctx.executor, open_it)
        except (TemporaryFailure, OSError) as exc:
            self._unavailable(exc)
            return
        if mailbox is None:
            self.conn.close_after_send()
            if problem:
                self.conn.err(problem, "SYS/TEMP")
            else:
                self.conn.err("your mailbox is in use by another session", "IN-USE")
            self.session.flush()
            return
        if not self.session.is_open:  # the client left while the Maildir was scanned
            mailbox.connection.release()
            return
        lock = mailbox.connection  # the broker holds the lock while it is open
        self.session.lock, self.session.mailbox, self.session.user = lock, mailbox, address
        log.info(
            "login.ok %s",
            login_fields(
                "pop3",
                self.session.id,
                address,
                self.session.remote_ip,
                self.session.transport,
            ),
        )
        self.conn.logged_in()
        self.session.flush()

    def stls(self) -> None:
        """STLS (RFC 2595 4): the session upgrades the connection."""
        if self.ctx.tls is None:
            self.conn.err(f"TLS not available: {self.ctx.tls_problem}", "SYS/TEMP")
            return
        self.conn.ok("Begin TLS negotiation")  # the engine drops what it buffered
        self.session.flush()
        self.session.begin_tls(implicit=False)
