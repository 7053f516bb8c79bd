"""``qtoaster serve auth``: checks every login of every smtpd and pop3d worker.

The only process that opens the credentials (password hashes, CRAM-MD5 contexts, the
sealed APOP secrets and their key): it runs auth.verify's checks and holds the one
:class:`~qtoaster.auth.throttle.LoginThrottle` of the whole server (its counts shared
with the other hosts' auth roles when the directory is on PostgreSQL: docs/cluster.md).
Workers ask over the Unix socket :func:`qtoaster.auth.protocol.socket_path`
(``<home>/run/auth/auth.sock``, mode 0660) in the protocol of auth.protocol.

Invariants:
- the throttle's delay is taken here, before the answer is written (an asyncio sleep, no
  thread held): a worker cannot skip it, and a client that hangs up still holds its slot;
- at most ``[auth] max_in_flight`` verify requests per client address (IPv6 /64) are in
  flight, delays included; one more is answered at once ``temporary``/``busy``;
- argon2 and the database run in :attr:`AuthServer.executor`, never on the loop;
- ``mechanisms`` follows the directory: asked again at most every
  :data:`MECHANISMS_TTL` seconds, so ``domain set --secrets`` and new passwords change
  the offer without a restart; while the directory is down the last answer stands;
- nothing a worker sends raises out of a connection's handler: a bad line gets an answer
  with ``id`` null, a too long line closes that connection;
- ``srs-forward`` (making an address this server will accept back) is answered to the
  send role's uid alone, ``srs-reverse`` to smtpd's and send's (SO_PEERCRED, when started
  as root); the key file (mailauth.srs.key_path) is read here only;
- a pop3 or imap login that succeeds gets a ticket (128 random bits) for its Maildir, kept here
  only: single use, valid TICKET_SECONDS, redeemed by the mailbox broker alone (its uid,
  checked with SO_PEERCRED, when started as root); at most MAX_TICKETS are held.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import struct
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from qtoaster.auth.protocol import (
    MAX_LINE,
    TICKET_SECONDS,
    MechanismsRequest,
    MechanismsResponse,
    ProtocolError,
    RedeemRequest,
    RedeemResponse,
    Response,
    SrsRequest,
    SrsResponse,
    VerifyRequest,
    VerifyResponse,
    decode_request,
    encode_response,
    socket_path,
)
from qtoaster.auth.throttle import LoginThrottle
from qtoaster.auth.verify import AuthResult, verify, verify_apop_login
from qtoaster.config.loader import Config, load_config
from qtoaster.core.errors import ConfigError, TemporaryFailure
from qtoaster.core.home import Home
from qtoaster.core.literal import client_key
from qtoaster.directory.lazy import LazyDirectory
from qtoaster.directory.loginfailures import shared_failures
from qtoaster.mailauth.srs import KeyRing, SrsError, key_path
from qtoaster.protocols.sasl import CramCredentials, PlainCredentials

log = logging.getLogger("qtoaster.auth")
MECHANISMS_TTL = 2.0
SOCKET_MODE = 0o660
# argon2-cffi releases the GIL: enough threads to keep every core busy with hashes.
THREADS = max(4, 2 * (os.cpu_count() or 1))
# Tickets are redeemed within milliseconds; this many unredeemed ones means a flood.
MAX_TICKETS = 10000
# The services whose successful login gets a ticket for the mailbox broker.
TICKET_SERVICES = ("pop3", "imap")


def peer_uid(writer: asyncio.StreamWriter) -> int | None:
    """The uid of the process at the other end of a Unix socket (SO_PEERCRED)."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    return int(struct.unpack("3i", raw)[1])


class AuthServer:
    """The auth role's state: directory, throttle, attempts in flight, the offer's cache."""

    def __init__(
        self,
        home: Home,
        config: Config | None = None,
        redeemer: int | None = None,
        srs_checker: int | None = None,
    ) -> None:
        self.home = home
        # The mailbox broker's uid when started as root; None: any peer may redeem. The
        # send role runs as the same user: it alone may have a sender rewritten (SRS).
        self.redeemer = redeemer
        # smtpd's uid when started as root: it may check SRS addresses (as may send).
        self.srs_checker = srs_checker
        self.srs_keys = KeyRing(key_path(home))
        # ticket -> (address, Maildir, monotonic deadline)
        self.tickets: dict[str, tuple[str, str, float]] = {}
        self.config = config or load_config(home)
        self.directory = LazyDirectory(
            home,
            self.config.settings.database_url,
            credentials_url=self.config.settings.credentials_url,
        )
        self.failures = shared_failures(
            home, self.config.settings.database_url, self.config.settings.credentials_url
        )
        self.throttle = LoginThrottle.from_settings(self.config.settings, self.failures)
        self.executor = ThreadPoolExecutor(THREADS, thread_name_prefix="auth")
        self.in_flight: dict[str, int] = {}
        self._offer = (False, -MECHANISMS_TTL)  # (secrets everywhere, monotonic time asked)
        self._offer_lock = asyncio.Lock()
        self._server: asyncio.AbstractServer | None = None

    def reload(self) -> None:
        """SIGHUP: new settings and default domain; the failures counted so far stay."""
        try:
            config = load_config(self.home)
        except ConfigError as exc:
            log.error("authd reload refused, keeping the running configuration:\n%s", exc)
            return
        if config.settings.database_url != self.config.settings.database_url:
            old, self.directory = (
                self.directory,
                LazyDirectory(
                    self.home,
                    config.settings.database_url,
                    credentials_url=config.settings.credentials_url,
                ),
            )
            old.close()
            self._new_failure_store(config)
        self.throttle.update(config.settings)
        self.config = config
        log.info("authd auth reloaded configuration")

    def _new_failure_store(self, config: Config) -> None:
        """Another database: count failures there (the counts so far stay behind)."""
        old = self.failures
        self.failures = shared_failures(
            self.home, config.settings.database_url, config.settings.credentials_url
        )
        self.throttle = LoginThrottle.from_settings(config.settings, self.failures)
        if old is not None:
            old.close()

    async def start(self) -> str:
        """Listen on the socket (a stale one from a killed predecessor is replaced)."""
        path = socket_path(self.home)
        path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._server = await asyncio.start_unix_server(
            self.handle, path=str(path), limit=MAX_LINE + 1
        )
        os.chmod(path, SOCKET_MODE)
        return str(path)

    async def close(self) -> None:
        if self._server is not None:
            # Not wait_closed(): it waits for the workers' long-lived connections too.
            self._server.close()
        self.executor.shutdown(wait=True)
        self.directory.close()
        if self.failures is not None:
            self.failures.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One worker's connection: requests are answered as they finish (pipelined)."""
        tasks: set[asyncio.Task[None]] = set()
        uid = peer_uid(writer) if self.redeemer is not None else None
        may_redeem = self.redeemer is None or uid == self.redeemer
        may_reverse = may_redeem or (self.srs_checker is not None and uid == self.srs_checker)
        allowed = {"srs-forward": may_redeem, "srs-reverse": may_reverse}
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, ConnectionError):  # too long (LimitOverrun) or reset
                    break
                if not line:
                    break
                answer = self._answer(line, writer, may_redeem, allowed)
                task = asyncio.get_running_loop().create_task(answer)
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            # The requests in flight keep running: their delays and slots must hold even
            # when the worker (or its client) went away.
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            writer.close()

    async def _answer(
        self,
        line: bytes,
        writer: asyncio.StreamWriter,
        may_redeem: bool,
        allowed: dict[str, bool],
    ) -> None:
        try:
            request = decode_request(line)
        except ProtocolError as exc:
            response: Response = VerifyResponse(None, False, True, "", f"bad request: {exc}")
        else:
            if isinstance(request, MechanismsRequest):
                everywhere = await self.secrets_everywhere()
                response = MechanismsResponse(request.id, everywhere, everywhere)
            elif isinstance(request, RedeemRequest):
                response = self.redeem(request, may_redeem)
            elif isinstance(request, SrsRequest):
                response = self.srs(request, allowed[request.op])
            else:
                response = await self.verify(request)
        if not writer.is_closing():
            writer.write(encode_response(response))

    async def secrets_everywhere(self) -> bool:
        """Whether CRAM-MD5 and APOP can be offered now (cached MECHANISMS_TTL seconds)."""
        async with self._offer_lock:  # one database query however many workers ask
            value, asked = self._offer
            if time.monotonic() - asked < MECHANISMS_TTL:
                return value
            loop = asyncio.get_running_loop()
            try:
                value = await loop.run_in_executor(self.executor, self.directory.secrets_everywhere)
            except TemporaryFailure as exc:
                log.warning("authd directory unavailable, offer unchanged: %s", exc)
            self._offer = (value, time.monotonic())
            return value

    def issue(self, address: str, maildir: str) -> str:
        """A new ticket for ``address``'s Maildir (a pop3 login that succeeded)."""
        now = time.monotonic()
        if len(self.tickets) >= MAX_TICKETS:
            self.tickets = {t: v for t, v in self.tickets.items() if v[2] > now}
            while len(self.tickets) >= MAX_TICKETS:  # the oldest go first
                del self.tickets[next(iter(self.tickets))]
        ticket = secrets.token_hex(16)
        self.tickets[ticket] = (address, maildir, now + TICKET_SECONDS)
        return ticket

    def redeem(self, request: RedeemRequest, may_redeem: bool) -> RedeemResponse:
        """The ticket's address and Maildir, once; refused when unknown, used, expired,
        or asked by another uid than the broker's (the ticket is then left alone)."""
        if not may_redeem:
            log.warning("authd redeem refused: peer is not the mailbox broker")
            return RedeemResponse(request.id, False, "", "")
        found = self.tickets.pop(request.ticket, None)
        if found is None or found[2] < time.monotonic():
            return RedeemResponse(request.id, False, "", "")
        return RedeemResponse(request.id, True, found[0], found[1])

    def srs(self, request: SrsRequest, allowed: bool) -> SrsResponse:
        """Rewrite or reverse an address (HMAC-SHA1 of a few bytes: on the loop)."""
        if not allowed:
            log.warning("authd %s refused: not this peer's to ask", request.op)
            return SrsResponse(request.id, False, True, "", "not allowed to this peer")
        try:
            srs = self.srs_keys.srs(self.config.settings.srs.max_age_days)
        except (OSError, ValueError) as exc:
            log.error("authd SRS key unusable (qtoaster srs keygen makes one): %s", exc)
            return SrsResponse(request.id, False, True, "", f"no SRS key: {exc}")
        try:
            if request.op == "srs-forward":
                address = srs.forward(request.address, request.domain)
            else:
                address = srs.reverse(request.address)
        except SrsError as exc:
            return SrsResponse(request.id, False, False, "", exc.reason)
        except ValueError as exc:  # forward: a sender without a domain
            return SrsResponse(request.id, False, False, "", str(exc))
        return SrsResponse(request.id, True, False, address, "ok")

    async def verify(self, request: VerifyRequest) -> VerifyResponse:
        key = client_key(request.ip)
        cap = self.config.settings.auth_max_in_flight
        if self.in_flight.get(key, 0) >= cap:
            log.info("authd busy client=%s: %d logins in flight", request.ip, cap)
            return VerifyResponse(
                request.id, False, True, "", "too many logins in flight", busy=True
            )
        self.in_flight[key] = self.in_flight.get(key, 0) + 1
        try:
            return await self._verify(request)
        finally:
            left = self.in_flight[key] - 1
            if left:
                self.in_flight[key] = left
            else:
                del self.in_flight[key]

    async def _verify(self, request: VerifyRequest) -> VerifyResponse:
        loop = asyncio.get_running_loop()
        try:
            result, maildir = await loop.run_in_executor(
                self.executor, self._checked, self._check(request), request.service
            )
            # Off the loop too: with a shared store (PostgreSQL) counting is a query.
            delay = await loop.run_in_executor(self.executor, self._count, request.ip, result)
        except TemporaryFailure as exc:
            log.warning("authd directory unavailable: %s", exc)
            return VerifyResponse(request.id, False, True, "", f"directory unavailable: {exc}")
        if delay:
            await asyncio.sleep(delay)
        ticket = self.issue(result.user, maildir) if maildir is not None else ""
        return VerifyResponse(
            request.id,
            result.ok,
            False,
            result.user,
            result.reason,
            int(result.flags),
            ticket=ticket,
        )

    def _count(self, ip: str, result: AuthResult) -> float:
        """Record the result in the throttle; the seconds to wait before answering."""
        throttle = self.throttle
        if result.ok:
            delay = throttle.success_delay(ip)
            throttle.succeeded(ip, result.user)
        else:
            throttle.failed(ip, result.user)
            delay = throttle.delay_for(ip, result.user)
        return delay

    def _checked(
        self, check: Callable[[], AuthResult], service: str
    ) -> tuple[AuthResult, str | None]:
        """The check, and for a pop3 or imap success the user's Maildir (the ticket's): "" when
        the user has none (the broker answers qmail-pop3d's "no $HOME/Maildir")."""
        result = check()
        if not result.ok or service not in TICKET_SERVICES:
            return result, None
        user = self.directory.user(result.user)
        return result, "" if user is None else str(user.maildir)

    def _check(self, request: VerifyRequest) -> Callable[[], AuthResult]:
        default = self.config.controls.defaultdomain
        if request.mechanism == "APOP":
            banner = request.challenge.decode("utf-8", "surrogateescape")
            return partial(
                verify_apop_login, self.directory, request.user, banner, request.secret, default
            )
        credentials: PlainCredentials | CramCredentials
        if request.mechanism == "CRAM-MD5":
            credentials = CramCredentials(request.user, request.secret, request.challenge)
        else:
            credentials = PlainCredentials(request.user, request.secret)
        return partial(
            verify, self.directory, credentials, service=request.service, default_domain=default
        )


async def serve_auth(
    home: Home,
    ready: Callable[[], None],
    redeemer: int | None = None,
    srs_checker: int | None = None,
) -> None:
    """Answer the workers until SIGTERM or SIGINT; *ready* once the socket listens.
    ``redeemer``: the mailbox broker's uid (started as root), the one peer that may
    redeem tickets and have senders rewritten (the send role is the same user);
    ``srs_checker``: smtpd's, which may also check SRS addresses."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    server = AuthServer(home, redeemer=redeemer, srs_checker=srs_checker)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, server.reload)
    path = await server.start()
    log.info("authd auth listening on %s", path)
    ready()
    await stop.wait()
    await server.close()
