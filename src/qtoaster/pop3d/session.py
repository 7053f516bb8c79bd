"""One POP3 session: drives the sans-IO engine over an asyncio transport (spec 19).

AUTHORIZATION: USER/PASS, APOP, AUTH CRAM-MD5/PLAIN (RFC 5034), CAPA, STLS; the login is
verified against the directory in a thread (argon2), then the user's Maildir is locked
(one session per mailbox: ``-ERR [IN-USE]``) and scanned, and only then ``+OK ``.
TRANSACTION: qmail-pop3d's commands on :class:`qtoaster.pop3.Mailbox`; RETR and TOP stream
the file in chunks. UPDATE: only at QUIT (a dropped connection changes nothing).

Invariants:
- plain-text logins (USER/PASS, AUTH PLAIN) need TLS unless ``[auth] allow_plaintext``;
  APOP and CRAM-MD5 need an account that keeps secrets (docs/directory.md);
- a failed login is answered after the throttle's delay; ``[auth] max_failures`` of them
  end the session (qmail-popup ended it at the first); accounts with NO_POP or DISABLED
  cannot log in;
- the lock is released whatever ends the session (QUIT, drop, timeout, crash: flock).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from typing import cast

from qtoaster.auth.verify import AuthResult, login_address, verify
from qtoaster.core.errors import TemporaryFailure
from qtoaster.directory.schema import UserFlag
from qtoaster.directory.secrets import verify_apop
from qtoaster.maildir.lock import MailboxLock
from qtoaster.maildir.mailbox import Mailbox, MailboxError, MessageNumberError
from qtoaster.pop3d.context import Pop3Context
from qtoaster.protocols import sasl
from qtoaster.protocols.pop3 import events as ev
from qtoaster.protocols.pop3.server import NEED_DATA, Pop3Connection
from qtoaster.protocols.sasl import (
    Challenge,
    CramCredentials,
    Failure,
    Mechanism,
    PlainCredentials,
    SaslServer,
)
from qtoaster.tls import upgrade

log = logging.getLogger("qtoaster.pop3d")
_ids = itertools.count(1)
CHUNK = 64 * 1024
# Above this much unsent output, RETR waits for the client to read (flow control).
HIGH_WATER = 256 * 1024
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


class Pop3Session(asyncio.Protocol):
    def __init__(self, ctx: Pop3Context, sessions: set[Pop3Session], kind: str) -> None:
        self.ctx = ctx
        self.sessions = sessions
        self.kind = kind
        self.conn = Pop3Connection(tls=kind == "pop3s")
        self.transport: asyncio.Transport | None = None
        self.id = f"pop3:{os.getpid()}:{next(_ids)}"
        self.remote_ip = "unknown"
        self.busy = False
        self.last_activity = time.monotonic()
        self.banner = ""
        self.tls_active = False
        self.sasl: SaslServer | None = None
        self.mailbox: Mailbox | None = None
        self.lock: MailboxLock | None = None
        self.user: str | None = None
        self.failures = 0
        self.task: asyncio.Task[None] | None = None
        self.drained = asyncio.Event()
        self.drained.set()

    # -- asyncio callbacks ---------------------------------------------------------
    def connection_made(self, base: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, base)
        peer = transport.get_extra_info("peername") or ("unknown", 0)
        ip = str(peer[0])
        self.remote_ip = ip[7:] if ip.startswith("::ffff:") and "." in ip else ip
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

    def _greet(self) -> None:
        self.conn.ok(self.banner)
        self._flush()

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        self.conn.receive_data(data)
        if not self.busy:
            self._process()

    def eof_received(self) -> bool:
        self.conn.receive_data(b"")
        if not self.busy:
            self._process()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.sessions.discard(self)
        self.drained.set()
        self._unlock()

    def pause_writing(self) -> None:
        self.drained.clear()

    def resume_writing(self) -> None:
        self.drained.set()

    # -- driving the engine --------------------------------------------------------
    def _process(self) -> None:
        while not self.busy and self.transport is not None and not self.transport.is_closing():
            event = self.conn.next_event()
            if event is NEED_DATA:
                break
            try:
                self._handle(event)
            except Exception:
                log.exception("%s internal error handling %r", self.id, event)
                self.close()
                return
        self._flush()

    def _flush(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        out = self.conn.data_to_send()
        if out:
            self.transport.write(out)
        if self.conn.closed:
            self.transport.close()

    def close(self) -> None:
        """Timeout or shutdown: close without UPDATE (RFC 1939 6: only QUIT commits)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        self._unlock()

    def _run(self, coro: object) -> None:
        """Run a step that waits (a thread, a delay, TLS); commands wait for it."""
        self.busy = True
        self.task = asyncio.get_running_loop().create_task(self._guard(coro))

    async def _guard(self, coro: object) -> None:
        try:
            await coro  # type: ignore[misc]
        except Exception:
            log.exception("%s internal error", self.id)
            self.close()
            return
        finally:
            self.busy = False
            self.last_activity = time.monotonic()
        if self.transport is not None and not self.transport.is_closing():
            self._process()

    def _handle(self, event: object) -> None:
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
                self._run(self._login(PlainCredentials(user, event.password)))
        elif isinstance(event, ev.Apop):
            self._run(self._login_apop(event.name, event.digest))
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

    # -- AUTHORIZATION -------------------------------------------------------------
    def _plaintext_ok(self) -> bool:
        return self.conn.tls or self.ctx.config.settings.auth_allow_plaintext

    def _secrets(self) -> bool:
        return self.ctx.secrets[0]

    def _capa(self) -> None:
        """The seed's CAPA lines, and what RFC 2449/2595 add, as really available."""
        lines = ["TOP", "UIDL", "LAST"]
        if self.mailbox is None:
            if self._plaintext_ok():
                lines.append("USER")
            if self._secrets():
                lines.append("APOP")
            mechanisms = (["CRAM-MD5"] if self._secrets() else []) + (
                ["PLAIN"] if self._plaintext_ok() else []
            )
            if mechanisms:
                lines.append("SASL " + " ".join(mechanisms))
            if self.ctx.tls is not None and not self.conn.tls:
                lines.append("STLS")
        lines += ["PIPELINING", "RESP-CODES", "AUTH-RESP-CODE", "IMPLEMENTATION qtoaster"]
        self.conn.multiline("Capability list follows", lines)

    def _auth(self, event: ev.Auth) -> None:
        mechanism = sasl.parse_mechanism(event.mechanism)
        if mechanism is Mechanism.CRAM_MD5 and self._secrets():
            self.sasl = SaslServer(mechanism, cram_challenge=self.banner.encode())
        elif mechanism is Mechanism.PLAIN and self._plaintext_ok():
            self.sasl = SaslServer(mechanism)
        elif mechanism is Mechanism.PLAIN:
            self.conn.err("plain text login needs TLS first (STLS)", "AUTH")
            return
        else:
            self.conn.err("unimplemented")
            return
        self._sasl_step(self.sasl.start(event.initial_response))

    def _sasl_step(self, step: Challenge | PlainCredentials | CramCredentials | Failure) -> None:
        if isinstance(step, Challenge):
            self.conn.challenge(step.text)
            return
        self.sasl = None
        if isinstance(step, Failure):
            # POP3 has no SMTP codes: qmail-popup answers -ERR (spec 19.4).
            self.conn.err(step.reply.text.split(" (#", 1)[0])
            return
        self._run(self._login(step))

    async def _login_apop(self, name: str, digest: str) -> None:
        loop = asyncio.get_running_loop()
        default = self.ctx.config.controls.defaultdomain
        address = login_address(name, default) or name

        def check() -> AuthResult:
            _cram, secret = self.ctx.directory.auth_secrets(address)
            user = self.ctx.directory.user(address)
            ok = secret is not None and verify_apop(self.banner, secret, digest)
            if ok and user is not None and user.flags & UserFlag.NO_POP:
                return AuthResult(False, address, "POP disabled")
            return AuthResult(ok and user is not None, address, "APOP")

        try:
            result = await loop.run_in_executor(self.ctx.executor, check)
        except TemporaryFailure as exc:
            self._unavailable(exc)
            return
        await self._logged_in_or_not(result)

    async def _login(self, credentials: PlainCredentials | CramCredentials) -> None:
        loop = asyncio.get_running_loop()
        default = self.ctx.config.controls.defaultdomain

        def check() -> AuthResult:
            return verify(self.ctx.directory, credentials, service="pop3", default_domain=default)

        try:
            result = await loop.run_in_executor(self.ctx.executor, check)
        except TemporaryFailure as exc:
            self._unavailable(exc)
            return
        await self._logged_in_or_not(result)

    def _unavailable(self, exc: Exception) -> None:
        log.warning("%s directory unavailable: %s", self.id, exc)
        self.conn.close_after_send()
        self.conn.err("unable to check the password now, try again later", "SYS/TEMP")
        self._flush()

    async def _logged_in_or_not(self, result: AuthResult) -> None:
        throttle = self.ctx.throttle
        if not result.ok:
            throttle.failed(self.remote_ip, result.user)
            delay = throttle.delay_for(self.remote_ip, result.user)
            log.info(
                "%s login failed user=%s client=%s reason=%s",
                self.id,
                result.user,
                self.remote_ip,
                result.reason,
            )
            await asyncio.sleep(delay)
            # qmail-popup closed the connection after one failure; we allow a few, like
            # SMTP AUTH ([auth] max_failures), so that a client whose strongest mechanism
            # fails (CRAM-MD5 for an account without secrets) can fall back to another.
            self.failures += 1
            if throttle.session_exhausted(self.failures):
                self.conn.close_after_send()
            self.conn.err("authorization failed", "AUTH")
            self._flush()
            return
        await asyncio.sleep(throttle.delay_for(self.remote_ip, result.user))
        throttle.succeeded(self.remote_ip, result.user)
        await self._open_mailbox(result.user)

    async def _open_mailbox(self, address: str) -> None:
        loop = asyncio.get_running_loop()

        def open_it() -> tuple[MailboxLock | None, Mailbox | None, str]:
            user = self.ctx.directory.user(address)
            if user is None:
                return None, None, "this user has no $HOME/Maildir"
            lock = MailboxLock.acquire(user.maildir)
            if lock is None:
                return None, None, ""
            try:
                return lock, Mailbox.open(user.maildir), ""
            except MailboxError as exc:
                lock.release()
                return None, None, exc.text

        try:
            lock, mailbox, problem = await loop.run_in_executor(self.ctx.executor, open_it)
        except (TemporaryFailure, OSError) as exc:
            self._unavailable(exc)
            return
        if mailbox is None:
            self.conn.close_after_send()
            if problem:
                self.conn.err(problem, "SYS/TEMP")
            else:
                self.conn.err("your mailbox is in use by another session", "IN-USE")
            self._flush()
            return
        if self.transport is None or self.transport.is_closing():
            if lock is not None:
                lock.release()
            return
        self.lock, self.mailbox, self.user = lock, mailbox, address
        log.info("%s login user=%s client=%s", self.id, address, self.remote_ip)
        self.conn.logged_in()
        self._flush()

    # -- STLS (RFC 2595) -------------------------------------------------------------
    def _stls(self) -> None:
        if self.ctx.tls is None:
            self.conn.err(f"TLS not available: {self.ctx.tls_problem}", "SYS/TEMP")
            return
        self.conn.ok("Begin TLS negotiation")  # the engine drops what it buffered
        self._flush()
        self._begin_tls(implicit=False)

    def _begin_tls(self, *, implicit: bool) -> None:
        assert self.transport is not None
        upgrade.hold(self.transport)  # the ClientHello is for TLS, not the engine
        self._run(self._start_tls(implicit))

    async def _start_tls(self, implicit: bool) -> None:
        transport, tls = self.transport, self.ctx.tls
        assert transport is not None and tls is not None
        self.conn.discard_input()
        upgraded = await upgrade.handshake(
            transport, self, tls, timeout=60.0, who=f"{self.id} client={self.remote_ip}"
        )
        if upgraded is None:
            return
        self.transport = upgraded
        if implicit:
            self._greet()
        else:
            self.conn.start_tls_done()

    # -- TRANSACTION and UPDATE ------------------------------------------------------
    def _transaction(self, event: object) -> None:
        box = self.mailbox
        assert box is not None
        try:
            if isinstance(event, ev.Retr):
                self._retr(box, event.number)  # read_small() checks the number
            elif isinstance(event, ev.Stat):
                count, size = box.stat()
                self.conn.ok(f"{count} {size}")
            elif isinstance(event, ev.List | ev.Uidl):
                self._listing(box, event)
            elif isinstance(event, ev.Top):
                box.get(event.number)
                self._run(self._send_message(box, event.number, event.lines))
            elif isinstance(event, ev.Dele):
                box.get(event.number)
                box.delete(event.number)
                self.conn.ok()
            elif isinstance(event, ev.Noop):
                self.conn.ok()
            elif isinstance(event, ev.Rset):
                box.reset()
                self.conn.ok()
            elif isinstance(event, ev.Last):
                self.conn.ok(str(box.last))
            else:  # pragma: no cover - the engine's event set is closed
                raise AssertionError(f"unexpected event {event!r}")
        except MessageNumberError as exc:
            self.conn.err(exc.text)

    def _listing(self, box: Mailbox, event: ev.List | ev.Uidl) -> None:
        uidl = isinstance(event, ev.Uidl)
        if event.number is not None:
            message = box.get(event.number)
            self.conn.ok(f"{message.number} {message.uid if uidl else message.size}")
            return
        lines = (
            f"{m.number} {m.uid if uidl else m.size}".encode("utf-8", "surrogateescape")
            for m in box.undeleted()
        )
        self.conn.multiline("", lines)

    def _retr(self, box: Mailbox, number: int) -> None:
        """RETR: a message that fits in one chunk is answered at once (no task, and its
        reply leaves with the other pipelined answers in one write); a bigger one is
        streamed by :meth:`_send_message`."""
        try:
            data = box.read_small(number, CHUNK)
        except OSError:
            self.conn.err("unable to open that message")
            return
        if data is None:
            self._run(self._send_message(box, number, None))
            return
        self.conn.send_message(data)

    async def _send_message(self, box: Mailbox, number: int, lines: int | None) -> None:
        """RETR/TOP: the file streamed in chunks, waiting for the client when it lags."""
        try:
            source = box.open_message(number) if lines is None else None
            top = box.top_lines(number, lines) if lines is not None else None
        except OSError:
            self.conn.err("unable to open that message")
            self._flush()
            return
        self.conn.send_multiline_start()
        try:
            if source is not None:
                with source:
                    while chunk := source.read(CHUNK):
                        await self._write_chunk(chunk)
            else:
                assert top is not None
                for piece in top:
                    await self._write_chunk(piece)
        except OSError as exc:  # the file went away mid-way: the client sees a short message
            log.warning("%s read error in message %d: %s", self.id, number, exc)
        self.conn.send_multiline_end()
        self._flush()

    async def _write_chunk(self, chunk: bytes) -> None:
        self.conn.send_multiline_chunk(chunk)
        self._flush()
        if not self.drained.is_set():
            await self.drained.wait()

    def _quit(self) -> None:
        box = self.mailbox
        if box is None:
            self.conn.ok()
            return
        self._run(self._update(box))

    async def _update(self, box: Mailbox) -> None:
        loop = asyncio.get_running_loop()
        problems = await loop.run_in_executor(self.ctx.executor, box.commit)
        self._unlock()
        if problems:
            log.warning("%s update problems: %s", self.id, "; ".join(problems))
            self.conn.err("unable to unlink all deleted messages")
        else:
            self.conn.ok()
        self._flush()

    def _unlock(self) -> None:
        lock, self.lock = self.lock, None
        if lock is not None:
            lock.release()
