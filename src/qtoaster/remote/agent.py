"""The remote delivery agent: qmail-remote's job for one message and one domain.

Given a queued message and its recipients at one domain, find where to send it
(``smtproutes``, else MX, implicit MX, IP literals: ``remote/routes.py``, ``remote/dns.py``),
try the hosts in order (a host whose greeting is 4xx/5xx or that cannot be reached is
skipped, spec 17.4), speak SMTP through ``remote/session.py``, and return one qmail result
per recipient.  One connection carries all the recipients of the message (spec 17.1).

Connections that end a transaction cleanly are kept open for a moment (``IDLE_SECONDS``) and
reused for the next message to the same destination, as Postfix's connection cache does:
under load that saves a TCP and TLS handshake, EHLO and QUIT per message.

Invariants: every recipient gets exactly one Result; a DNS or network problem is temporary
unless qmail's rules make it permanent (NXDOMAIN, null MX, best-preference MX is me); a
reused connection that turns out dead before the message went out is retried on a fresh one,
never reported as a failure.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from qtoaster.config.control import Controls, ascii_lower, read_list
from qtoaster.config.rolecontrols import load_remote
from qtoaster.core.dsn import NO_DSN, EnvelopeDsn
from qtoaster.core.errors import ConfigError
from qtoaster.core.literal import ip_literal
from qtoaster.core.outcome import Outcome, Result
from qtoaster.protocols.smtp.client import Transaction, TransactionResult
from qtoaster.remote.body import Body, has_eight_bit
from qtoaster.remote.dane import DaneFailure
from qtoaster.remote.dns import DnsFailure, MailHost, Resolver
from qtoaster.remote.routes import SmtpRoutes
from qtoaster.remote.session import (
    ConnectFailed,
    Connection,
    Endpoint,
    Skip,
    Timeouts,
    TlsFallback,
)
from qtoaster.remote.tlspolicy import (
    REQUIRETLS_LABEL,
    Destination,
    Refusal,
    TransportSecurity,
    tls_required_no,
)
from qtoaster.tls.client import ClientTls, ClientTlsMode, ClientTlsPolicy

log = logging.getLogger("qtoaster.remote")

NO_CONNECTION = "Sorry, I wasn't able to establish an SMTP connection. (#4.4.1)"
IDLE_SECONDS = 2.0  # Postfix's smtp_connection_cache_time_limit
MAX_IDLE_PER_DESTINATION = 20
INLINE_SCAN = 64 * 1024  # messages up to this size are scanned for 8-bit bytes in place


@dataclass(frozen=True, slots=True)
class RemoteAttempt:
    results: list[Result]  # one per recipient, in order
    reached: bool  # some host answered SMTP; False: the destination could not be reached


@dataclass(frozen=True, slots=True)
class RemoteConfig:
    helo: str  # control/helohost, default me
    port: int  # [remote] port
    timeouts: Timeouts
    outgoingip: str | None  # control/outgoingip

    @classmethod
    def load(cls, control_dir: Path, controls: Controls, port: int) -> RemoteConfig:
        files = load_remote(control_dir)
        return cls(
            helo=files.helohost or controls.me,
            port=port,
            timeouts=Timeouts(connect=files.timeoutconnect, remote=files.timeoutremote),
            outgoingip=files.outgoingip,
        )


class RoutesFile:
    """control/smtproutes, read again when it changes (qmail-remote read it per delivery).

    A file that fails to parse at start is a ConfigError; later, the previous routes stay
    in force and the problem is logged, so a typo never reroutes mail.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._routes = SmtpRoutes.parse([])
        self._load(strict=True)

    def current(self) -> SmtpRoutes:
        return self._load(strict=False)

    def _load(self, strict: bool) -> SmtpRoutes:
        try:
            st = os.stat(self.path)
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamp:
            return self._routes
        try:
            routes = SmtpRoutes.parse(read_list(self.path) if stamp else [])
        except ConfigError as exc:
            if strict:
                raise
            log.error("remote keeping the previous smtproutes: %s", "; ".join(exc.problems))
            routes = self._routes
        self._stamp, self._routes = stamp, routes
        return routes


class RemoteAgent:
    def __init__(
        self,
        config: RemoteConfig,
        resolver: Resolver,
        routes: RoutesFile,
        tls: ClientTls,
        security: TransportSecurity | None = None,
    ) -> None:
        self.config = config
        self.resolver = resolver
        self.routes = routes
        self.tls = tls
        self.security = security  # MTA-STS and DANE (remote/tlspolicy.py); None: off
        self._idle: dict[str, list[tuple[Connection, asyncio.TimerHandle]]] = {}

    async def deliver(
        self,
        body: Body,
        sender: str,
        recipients: Sequence[str],
        domain: str,
        requiretls: bool = False,
        smtputf8: bool = False,
        dsn: EnvelopeDsn = NO_DSN,
        binarymime: bool = False,
    ) -> RemoteAttempt:
        """*requiretls*: the message came with REQUIRETLS (RFC 8689): only verified TLS to a
        host that offers REQUIRETLS, else a permanent failure.  *smtputf8*: it came with
        SMTPUTF8 (RFC 6531): only a host that offers SMTPUTF8 (protocols/smtp/nexthop.py).
        *dsn*: the DSN request, its recipients by position in ``recipients``, relayed to a
        host that offers DSN.  *binarymime*: it came with BODY=BINARYMIME (RFC 3030): sent by
        BDAT to a host that offers CHUNKING and BINARYMIME, else a permanent failure."""
        domain = ascii_lower(domain)
        # The 8-bit scan reads the whole message: a big one is read off the event loop.
        if body.length <= INLINE_SCAN:
            eightbit = has_eight_bit(body)
        else:
            eightbit = await asyncio.to_thread(has_eight_bit, body)
        tx = Transaction(
            sender,
            tuple(recipients),
            body.length,
            eightbit,
            requiretls,
            smtputf8=smtputf8,
            dsn=dsn,
            binarymime=binarymime,
        )
        # A REQUIRETLS message never reuses a session opened with less TLS.
        key = f"{domain}\0requiretls" if requiretls else domain
        reused = await self._try_idle(key, tx, body)
        if reused is not None:
            return reused
        try:
            hosts, port, routed = await self._targets(domain)
        except DnsFailure as exc:
            outcome = Outcome.TEMPORARY if exc.temporary else Outcome.PERMANENT
            return RemoteAttempt([Result(outcome, exc.report)] * len(recipients), not exc.temporary)
        dest: Destination | None = None
        security = self.security
        if security is not None and not requiretls and tls_required_no(body):
            log.info("remote %s: TLS-Required: No, MTA-STS and DANE not applied", domain)
            security = None
        if security is not None and not routed and ip_literal(domain) is None:
            try:
                dest = await security.destination(domain)
            except DaneFailure as exc:  # RFC 7672 2.1.1: never downgrade on a DNS failure
                report = f"DANE: {exc} (#4.4.3)"
                return RemoteAttempt([Result(Outcome.TEMPORARY, report)] * len(recipients), True)
        refused = ""
        for host in hosts:
            try:
                base = self.tls.policy_for(ascii_lower(host.name))
                if security is not None:
                    chosen = await security.host_policy(dest, ascii_lower(host.name), base)
                else:
                    chosen = base
                if requiretls and not isinstance(chosen, Refusal):
                    chosen = self._requiretls_policy(ascii_lower(host.name), chosen)
            except ConfigError as exc:  # a tlshosts file we cannot use: never send in clear
                report = f"{'; '.join(exc.problems)} (#4.7.5)"
                return RemoteAttempt([Result(Outcome.TEMPORARY, report)] * len(recipients), True)
            if isinstance(chosen, Refusal):
                log.info("remote %s refused: %s", host.name, chosen.reason)
                refused = chosen.reason
                continue
            policy = chosen
            for address in host.addresses:
                result = await self._try_host(
                    key, Endpoint(host.name, address, port), policy, tx, body
                )
                if result is not None:
                    return RemoteAttempt(_results(result), True)
        if refused:  # a policy refused some host and no other took the message
            report = f"Sorry, no usable MX host: {refused}. (#4.7.5)"
            return RemoteAttempt([Result(Outcome.TEMPORARY, report)] * len(recipients), True)
        temporary = Result(Outcome.TEMPORARY, NO_CONNECTION)
        return RemoteAttempt([temporary] * len(recipients), False)

    async def close(self) -> None:
        """Close every cached connection (QUIT first)."""
        idle, self._idle = self._idle, {}
        for entries in idle.values():
            for conn, timer in entries:
                timer.cancel()
                await conn.close()

    # -- routing ----------------------------------------------------------------------

    async def _targets(self, domain: str) -> tuple[list[MailHost], int, bool]:
        """The hosts, the port, and whether an smtproutes route chose them."""
        route = self.routes.current().lookup(domain)
        if route is None:
            return await self.resolver.mail_hosts(domain), self.config.port, False
        addresses = await self.resolver.host_addresses(route.relay)
        name = route.relay.strip("[]")
        return [MailHost(name, 0, addresses)], route.port or self.config.port, True

    def _requiretls_policy(self, host: str, policy: ClientTlsPolicy) -> ClientTlsPolicy:
        """RFC 8689 4.2.1: TLS whose certificate was checked: DANE, MTA-STS, tlshosts, or
        else PKIX (system CAs and ``[remote] ca_file``) naming the MX."""
        if policy.mode is ClientTlsMode.REQUIRED:
            return policy
        cafile = self.security.cafile if self.security is not None else None
        return self.tls.verified(host, REQUIRETLS_LABEL, cafile)

    # -- one host ----------------------------------------------------------------------

    async def _try_host(
        self, key: str, endpoint: Endpoint, policy: ClientTlsPolicy, tx: Transaction, body: Body
    ) -> TransactionResult | None:
        """Deliver via one address; None means "try the next one" (17.2, 17.4)."""
        for attempt_policy in (policy, _clear(policy)):
            try:
                conn = await Connection.open(
                    endpoint,
                    helo=self.config.helo,
                    policy=attempt_policy,
                    timeouts=self.config.timeouts,
                    source=self.config.outgoingip,
                    requiretls=tx.requiretls,
                )
            except ConnectFailed as exc:
                log.info(
                    "remote %s [%s]:%d: %s", endpoint.host, endpoint.address, endpoint.port, exc
                )
                return None
            try:
                result = await conn.transact(tx, body)
            except Skip as exc:
                log.info("remote %s [%s] skipped: %s", endpoint.host, endpoint.address, exc)
                return None
            except TlsFallback as exc:
                # Opportunistic TLS failed: like Postfix, try the same host once in clear.
                log.info(
                    "remote %s [%s] TLS failed, retrying in clear: %s",
                    endpoint.host,
                    endpoint.address,
                    exc,
                )
                continue
            self._log_session(conn, result)
            await self._park_or_close(key, conn, result)
            return result
        return None

    def _log_session(self, conn: Connection, result: TransactionResult) -> None:
        """One line per connection (a reused one is not logged again): host, TLS or not."""
        ep = conn.endpoint
        log.info(
            "remote %s [%s]:%d %s: %s",
            ep.host,
            ep.address,
            ep.port,
            f"TLS {conn.tls}" if conn.tls else "no TLS",
            result.letter,
        )

    # -- the connection cache ----------------------------------------------------------

    async def _try_idle(self, key: str, tx: Transaction, body: Body) -> RemoteAttempt | None:
        entries = self._idle.get(key)
        while entries:
            conn, timer = entries.pop()
            timer.cancel()
            if not conn.idle_ok():
                conn.abort()
                continue
            result = await conn.transact(tx, body)
            if _died_unsent(result):
                conn.abort()  # the peer dropped the idle connection: no harm done
                continue
            await self._park_or_close(key, conn, result)
            return RemoteAttempt(_results(result), True)
        return None

    async def _park_or_close(self, key: str, conn: Connection, result: TransactionResult) -> None:
        entries = self._idle.setdefault(key, [])
        if not conn.usable or result.letter == "Z" or len(entries) >= MAX_IDLE_PER_DESTINATION:
            await conn.close()
            return
        loop = asyncio.get_running_loop()
        timer = loop.call_later(IDLE_SECONDS, self._expire, key, conn)
        entries.append((conn, timer))

    def _expire(self, key: str, conn: Connection) -> None:
        entries = self._idle.get(key, [])
        for i, (cached, _) in enumerate(entries):
            if cached is conn:
                del entries[i]
                break
        if not entries:
            self._idle.pop(key, None)
        task = asyncio.get_running_loop().create_task(conn.close())
        _closing.add(task)
        task.add_done_callback(_closing.discard)


_closing: set[asyncio.Task[None]] = set()


def _clear(policy: ClientTlsPolicy) -> ClientTlsPolicy:
    """The policy for a retry in clear after an opportunistic handshake failed."""
    if policy.mode is not ClientTlsMode.OPPORTUNISTIC:
        return policy
    return replace(policy, mode=ClientTlsMode.NONE, context=None)


def _results(result: TransactionResult) -> list[Result]:
    return [
        Result(outcome, report, result.dsn and outcome is Outcome.SUCCESS)
        for outcome, report in result.outcomes()
    ]


def _died_unsent(result: TransactionResult) -> bool:
    """A reused connection died before any reply to this transaction: safe to resend."""
    return (
        result.letter == "Z"
        and "connection died" in result.text
        and "Possible duplicate" not in result.text
        and all(r.letter == "r" for r in result.recipients)
    )
