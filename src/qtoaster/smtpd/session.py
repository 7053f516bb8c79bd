"""One SMTP session: drives the sans-IO engine over an asyncio transport.

The session is the one owner of the connection: it holds the transport, the engine,
the envelope being built and the policy's :class:`SessionState`, and three parts it
calls (never the other way round for anything but its public methods):
:class:`MessageIntake` (the message being received: spool, DATA checks, commit),
:class:`SecureSession` (STARTTLS, SMTPS and AUTH) and, for a client the CONNECT checks
refused, :class:`RblGate` (rblsmtpd's dialog).  Every byte for the client leaves
through :meth:`SmtpSession.write`.

Reading, batching the replies and holding commands back while a step waits are
:class:`qtoaster.net.driver.EngineDriver`'s (the per-process receive buffer, one write
per batch of pipelined commands); this module answers the engine's events.

The engine (protocols.smtp.server) parses and sequences; this module decides the
replies (through the policy pipeline: CONNECT before the greeting, HELO, MAIL, RCPT,
and DATA at the final dot), streams DATA into a queue spool and answers
250 only after the queue's commit returned.  Nothing here blocks the event loop
except small buffered writes to the spool; the commit (fsync) runs in the executor.

Invariants:
- replies are flushed only when the engine needs more input (RFC 2920 batching);
- while a commit is in flight no further command is handled (pipelined commands
  after the final dot are answered in order, after the 250); input is buffered, and
  reading pauses only if it passes the driver's ``max_input_while_busy``;
- a spool that is not committed is always aborted (connection lost, 4xx, 5xx);
- only :meth:`SmtpSession.write` calls ``transport.write``;
- the envelope holds each recipient once (a duplicate RCPT is answered 250 and not added),
  and an address with a non-ASCII byte only when MAIL had SMTPUTF8 and it is valid UTF-8
  (else 553, RFC 6531 3.4); such a message is queued with the ``smtputf8`` origin flag.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, ClassVar, cast

from qtoaster.core import dsn
from qtoaster.core import reply as R
from qtoaster.core.logfields import fields
from qtoaster.core.reply import Reply
from qtoaster.net.driver import EngineDriver, plain_ip, tls_version
from qtoaster.policy.checks import pregreet
from qtoaster.policy.checks.databytes import effective_databytes
from qtoaster.policy.verdict import Facts, SessionState, Stage, Verdict
from qtoaster.protocols.smtp import events as ev
from qtoaster.protocols.smtp.server import NEED_DATA, ServerConnection
from qtoaster.smtpd import auth
from qtoaster.smtpd.addresses import recipient_key, rewrite_localip, utf8_refusal
from qtoaster.smtpd.intake import MessageIntake
from qtoaster.smtpd.rblgate import RblGate
from qtoaster.smtpd.secure import SecureSession

if TYPE_CHECKING:
    from qtoaster.smtpd.context import SmtpdContext

log = logging.getLogger("qtoaster.smtpd")
_ids = itertools.count(1)

# The events of a command line a client must not send ahead of our reply before it knows
# we offer PIPELINING (RFC 2920 3.1; BDAT's octets follow its line by design).
_COMMANDS = (
    ev.Helo,
    ev.MailFrom,
    ev.RcptTo,
    ev.Data,
    ev.Rset,
    ev.Noop,
    ev.Vrfy,
    ev.Help,
    ev.Quit,
    ev.Auth,
    ev.StartTls,
)


class SmtpSession(EngineDriver[ServerConnection]):
    __slots__ = (
        "_recipient_keys",
        "binarymime",
        "ctx",
        "dsn_mail",
        "dsn_rcpts",
        "env",
        "gate",
        "intake",
        "kind",
        "local_ip",
        "policy",
        "recipients",
        "remote_ip",
        "requiretls",
        "secure",
        "sender",
        "smtputf8",
    )

    need_data: ClassVar[object] = NEED_DATA
    log: ClassVar[logging.Logger] = log

    def __init__(self, ctx: SmtpdContext, sessions: set[SmtpSession], kind: str = "smtp") -> None:
        super().__init__(
            ServerConnection(enhanced_status_codes=True, tls=kind == "smtps"),
            sessions,
            f"{ctx.hostname_pid}:{next(_ids)}",
        )
        self.ctx = ctx
        self.kind = kind  # the listener: smtp, submission or smtps
        self.env: Mapping[str, str] = {}
        self.remote_ip = self.local_ip = "unknown"
        self.sender: str | None = None
        self.requiretls = False  # MAIL had REQUIRETLS (RFC 8689): queued as an origin flag
        self.binarymime = False  # MAIL had BODY=BINARYMIME (RFC 3030): an origin flag too
        self.smtputf8 = False  # MAIL had SMTPUTF8 (RFC 6531): UTF-8 addresses; an origin flag
        self.recipients: list[str] = []  # each address once (recipient_key)
        self.dsn_mail = dsn.NO_MAIL_DSN  # MAIL's RET/ENVID (RFC 3461), queued with it
        self.dsn_rcpts: dict[int, dsn.RcptDsn] = {}  # NOTIFY/ORCPT by recipient index
        self._recipient_keys: set[str] | None = None  # made at the first RCPT (idle memory)
        self.policy = SessionState()  # what checks count across commands (chkuser)
        self.intake = MessageIntake(self)
        self.secure = SecureSession(self)
        self.gate: RblGate | None = None  # set once the CONNECT checks refused the client

    # -- asyncio callbacks -------------------------------------------------
    def connection_made(self, base: asyncio.BaseTransport) -> None:
        super().connection_made(base)
        transport = cast(asyncio.Transport, base)
        peer = transport.get_extra_info("peername") or ("unknown", 0)
        sock = transport.get_extra_info("sockname") or ("unknown", 0)
        self.remote_ip, self.local_ip = plain_ip(peer[0]), plain_ip(sock[0])
        decision = self.ctx.config.tcp_smtp.match(self.remote_ip)
        if not decision.allow:
            # tcpserver's deny: drop without running the daemon (tcprules(1)).
            log.info(
                "refused %s",
                fields(
                    session=self.id,
                    stage="connect",
                    reason="tcprules",
                    client=self.remote_ip,
                    listener=self.kind,
                    rule=decision.rule,
                ),
            )
            transport.abort()
            return
        self.env = self.secure.base_env = {**self.ctx.process_env, **decision.env}
        # The environment and controls are fixed for the session (qmail reads them once).
        self.intake.databytes = effective_databytes(self.env, self.ctx.config.controls.databytes)
        self.sessions.add(self)
        log.info(
            "session.open %s",
            fields(session=self.id, client=self.remote_ip, listener=self.kind, local=self.local_ip),
        )
        if self.kind != "smtps" and self.env.get("SMTPS"):
            self.kind = "smtps"  # a tcp.smtp rule marks this listener implicit TLS
            self.conn = ServerConnection(enhanced_status_codes=True, tls=True)
        if self.kind == "smtps":
            # Implicit TLS (spec 7.4, RFC 8314): the handshake comes before the greeting.
            if self.ctx.tls is None:
                log.warning("tls.missing %s", fields(session=self.id, error=self.ctx.tls_problem))
                transport.abort()
                return
            self.secure.begin_tls(implicit=True)
            return
        self.screen()

    def write(self, data: bytes, *, close: bool = False) -> None:
        """The one way bytes reach the client (replies, greeting, rblsmtpd's dialog);
        ``close`` hangs up after them.  Nothing is written to a closing transport."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if data:
            transport.write(data)
        if close:
            transport.close()

    def _greet(self, opened: float) -> None:
        """Our 220, or (the pregreet test on) the 220 once ``[pregreet] wait`` seconds
        after ``opened`` have passed, the session busy meanwhile so that early input
        stays unread; with ``multiline`` a ``220-`` line goes out at once (postscreen's
        greet banner: a client must wait for the last line, RFC 5321 4.2.1)."""
        line = f"{self.ctx.config.controls.smtpgreeting} ESMTP"
        early = self.policy.early
        settings = self.ctx.config.settings.pregreet
        if self.policy.dnsbl.allowed:
            early.tested = False  # a DNSWL-allowed client skips the screens
        remaining = opened + settings.wait - time.monotonic() if early.tested else 0.0
        if remaining <= 0:
            early.waiting = False
            self.write(Reply(220, line).render())
            return
        if settings.multiline:
            self.write(f"220-{line}\r\n".encode())
        self.wait_for(self._greet_later(remaining, line))

    async def _greet_later(self, seconds: float, line: str) -> None:
        await asyncio.sleep(seconds)
        self.policy.early.waiting = False
        self.write(Reply(220, line).render())

    def data_received(self, data: bytes) -> None:
        if self.policy.early.waiting:
            self.policy.early.pregreet = True  # before our (last) greeting line
        if self.gate is not None:
            self.last_activity = time.monotonic()
            self.gate.feed(data)
            return
        super().data_received(data)

    def eof_received(self) -> bool:
        if self.gate is not None:
            return False
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        opened = self in self.sessions
        super().connection_lost(exc)
        self.intake.abort()
        if opened:
            log.info(
                "session.close %s",
                fields(
                    session=self.id,
                    client=self.remote_ip,
                    listener=self.kind,
                    tls=tls_version(self.transport),
                    auth=self.secure.auth_user,
                ),
            )

    # -- the engine's events (EngineDriver.process) --------------------------
    def handle(self, event: object) -> None:
        early = self.policy.early
        # More input behind a command line before EHLO was answered: sent ahead.
        if early.tested and not early.offered and self.conn.buffered:
            early.pipelining = early.pipelining or isinstance(event, _COMMANDS)
        if isinstance(event, ev.DataChunk):
            self.intake.chunk(event.data)
        elif isinstance(event, ev.DataEnd):
            self.intake.end(event.hops)
        elif isinstance(event, ev.DataAborted):
            self.intake.abort()
        elif isinstance(event, ev.Helo):
            self._helo(event)
        elif isinstance(event, ev.MailFrom):
            self._mail(event)
        elif isinstance(event, ev.RcptTo):
            self._rcpt(event.address, event.params)
        elif isinstance(event, ev.Data | ev.Bdat):  # the first BDAT opens the message (RFC 3030)
            self.intake.start()
        elif isinstance(event, ev.Rset):
            self.intake.abort()  # chunks of a BDAT message received so far (RFC 3030 2)
            self.reset()
            self.conn.send(R.FLUSHED)
        elif isinstance(event, ev.Noop):
            self.conn.send(R.OK)
        elif isinstance(event, ev.Vrfy):
            self.conn.send(R.VRFY)
        elif isinstance(event, ev.Help):
            self.conn.send(R.HELP)
        elif isinstance(event, ev.Quit):
            self.conn.send(self._greeting(221))
        elif isinstance(event, ev.Auth):
            self.secure.auth_begin(event)
        elif isinstance(event, ev.AuthLine):
            self.secure.auth_line(event.data)
        elif isinstance(event, ev.StartTls):
            self.secure.starttls()
        elif isinstance(event, ev.ConnectionClosed):
            # The engine's last words (a 421 it decided on), then hang up; the driver
            # handles no further event once the transport is closing.
            self.intake.abort()
            self.write(self.conn.data_to_send(), close=True)
        else:  # pragma: no cover - the engine's event set is closed
            raise AssertionError(f"unexpected event {event!r}")

    # -- replies -----------------------------------------------------------
    def _greeting(self, code: int) -> Reply:
        return Reply(code, self.ctx.config.controls.smtpgreeting)

    def _ehlo_reply(self) -> Reply:
        controls = self.ctx.config.controls
        lines = auth.ehlo_lines(controls.smtpgreeting, self.secure.offer(), self.intake.databytes)
        return Reply(250, "\n".join(lines))

    def _facts(
        self,
        *,
        helo: str | None = None,
        sender: str | None = None,
        recipient: str | None = None,
        size: int | None = None,
    ) -> Facts:
        return Facts(
            remote_ip=self.remote_ip,
            local_ip=self.local_ip,
            env=self.env,
            helo=self.conn.helo if helo is None else helo,
            sender=self.sender if sender is None else sender,
            recipient=recipient,
            size=size,
            recipients=tuple(self.recipients),
            listener=self.kind,
            authenticated=self.secure.auth_user is not None,
            auth_user=self.secure.auth_user,
        )

    # -- connection and HELO ---------------------------------------------------
    def screen(self) -> None:
        """The CONNECT checks, then our greeting, or rblsmtpd's dialog for a client they
        refuse (qmail's toaster ran rblsmtpd in front of qmail-smtpd: spec 1)."""

        opened = time.monotonic()
        facts = self._facts()
        if pregreet.tested(facts, self.ctx.config.settings.pregreet.enabled):
            self.policy.early.tested = self.policy.early.waiting = True

        def answer(verdict: Verdict) -> None:
            if verdict.reply is None:
                self._greet(opened)
            elif verdict.reply.code == 421:  # ratelimit's connections: refused, hang up
                self.write(verdict.reply.render(self.conn.enhanced), close=True)
            elif verdict.reply is not R.INTERNAL_ERROR:  # a failed check: expire() answers
                self.gate = RblGate(self, verdict.reply)
                self.gate.start()

        self._policy(Stage.CONNECT, facts, answer)

    def _helo(self, event: ev.Helo) -> None:
        self.reset()

        def answer(verdict: Verdict) -> None:
            if verdict.reply is not None:
                self.conn.send(verdict.reply)
            elif event.extended:
                self.policy.early.offered = True  # PIPELINING is known from now on
                self.conn.send(self._ehlo_reply())
            else:
                self.conn.send(self._greeting(250))

        self._policy(Stage.HELO, self._facts(helo=event.name), answer)

    # -- transaction ---------------------------------------------------------
    def reset(self) -> None:
        """Forget the envelope being built (RSET, HELO, DATA, STARTTLS)."""
        self.sender = None
        self.requiretls = False
        self.binarymime = False
        self.smtputf8 = False
        self.recipients = []
        self.dsn_mail = dsn.NO_MAIL_DSN
        self.dsn_rcpts = {}
        self._recipient_keys = None

    def _mail(self, event: ev.MailFrom) -> None:
        auth_user = self.secure.auth_user
        if self.kind == "submission" and auth_user is None:
            self.conn.send(auth.AUTH_REQUIRED)
            return
        restrict = self.ctx.config.settings.submission_restrict_sender
        if (
            restrict
            and self.kind == "submission"
            and auth_user is not None
            and not auth.sender_allowed(event.address, auth_user)
        ):
            self.conn.send(auth.NOT_YOUR_SENDER)
            return
        smtputf8 = "SMTPUTF8" in event.params
        refusal = R.SMTPUTF8_VALUE if event.params.get("SMTPUTF8") is not None else None
        refusal = refusal or utf8_refusal(event.address, smtputf8)
        if refusal is not None:
            self.conn.send(refusal)
            return
        requiretls = "REQUIRETLS" in event.params
        if requiretls and not self.secure.offer().requiretls:
            self.conn.send(auth.REQUIRETLS_NEEDS_TLS)
            return
        mail_dsn = dsn.mail_dsn(event.params)
        if isinstance(mail_dsn, Reply):
            self.conn.send(mail_dsn)
            return

        def answer(verdict: Verdict) -> None:
            if verdict.reply is not None:
                self.conn.send(verdict.reply)
                return
            self.sender = event.address
            self.requiretls = requiretls
            self.binarymime = event.body == "BINARYMIME"
            self.dsn_mail = mail_dsn
            self.dsn_rcpts = {}
            self.smtputf8 = smtputf8
            self.recipients = []
            self._recipient_keys = None
            self.conn.send(R.OK)

        facts = self._facts(sender=event.address, size=event.size)
        self._policy(Stage.MAIL, facts, answer)

    def _rcpt(self, address: str, params: Mapping[str, str | None]) -> None:
        refusal = utf8_refusal(address, self.smtputf8)
        if refusal is not None:  # accepted, it could only bounce later (RFC 6531 3.4)
            self.conn.send(refusal)
            return
        rcpt_dsn = dsn.rcpt_dsn(params)
        if isinstance(rcpt_dsn, Reply):
            self.conn.send(rcpt_dsn)
            return
        controls = self.ctx.config.controls
        address = rewrite_localip(address, self.local_ip, controls.localiphost)

        def answer(verdict: Verdict) -> None:
            if verdict.reply is not None:
                self.conn.send(verdict.reply)
                return
            accepted = verdict.rewritten or address
            key = recipient_key(accepted)
            keys = self._recipient_keys
            if keys is None:
                keys = self._recipient_keys = set()
            if key not in keys:  # a duplicate: 250 (Postfix), one copy
                keys.add(key)
                if not rcpt_dsn.empty:
                    self.dsn_rcpts[len(self.recipients)] = rcpt_dsn
                self.recipients.append(accepted)
            self.conn.send(R.OK)

        self._policy(Stage.RCPT, self._facts(recipient=address), answer)

    def _policy(self, stage: Stage, facts: Facts, answer: Callable[[Verdict], None]) -> None:
        """Run the checks of ``stage`` and ``answer`` with the verdict: at once when every
        check answered at once, else (a lookup off the loop, a delay) after waiting, with
        the session busy meanwhile so pipelined commands keep their order."""
        result = self.ctx.pipeline.run(stage, facts, self.id, self.policy)
        if not inspect.isawaitable(result) and not result.delay:
            answer(result)
            return
        self.busy = True
        self.task = asyncio.get_running_loop().create_task(self._policy_later(result, answer))

    async def _policy_later(
        self, result: Verdict | Awaitable[Verdict], answer: Callable[[Verdict], None]
    ) -> None:
        try:
            verdict = await result if inspect.isawaitable(result) else result
            if verdict.delay:
                await asyncio.sleep(verdict.delay)
        except Exception:
            log.exception("internal-error %s", fields(session=self.id, where="policy check"))
            verdict = Verdict(reply=R.INTERNAL_ERROR)
        self.busy = False
        self.last_activity = time.monotonic()
        if self.transport is None or self.transport.is_closing():
            return
        answer(verdict)
        if verdict.reply is R.INTERNAL_ERROR:
            self.expire(R.INTERNAL_ERROR)
            return
        self.resume()

    def answer_after_wait(self, reply: Reply) -> None:
        """The reply to the command the session waited for (a commit, a check)."""
        self.busy = False
        self.last_activity = time.monotonic()
        if self.transport is None or self.transport.is_closing():
            return
        self.conn.send(reply)
        self.resume()

    def resume(self) -> None:
        """After waiting (commit, lookup, delay): read again and handle buffered input.
        Not for a client in rblsmtpd's dialog: what it sent is no command of ours."""
        if self.gate is not None:
            return
        super().resume()

    # -- supervision (net.serve) ------------------------------------------------
    def internal_error(self) -> None:
        """A bug must not look like success, nor hang the client: 421 and close."""
        self.expire(R.INTERNAL_ERROR)

    def timed_out(self) -> None:
        """A command not complete within control/timeoutsmtpd, or a message slower than
        ``[smtpd] data_min_rate``: qmail's timeout reply, and the message is not queued."""
        intake = self.intake
        if intake.spool is not None:
            log.info(
                "timeout %s",
                fields(
                    session=self.id,
                    stage="data",
                    client=self.remote_ip,
                    size=intake.received,
                    seconds=f"{time.monotonic() - intake.started:.0f}",
                    data_min_rate=self.ctx.config.settings.data_min_rate,
                ),
            )
        self.expire(R.TIMEOUT)

    def shut_down(self) -> None:
        """The worker stops: an idle session is told so; a commit in flight finishes
        (the drain's overtime) and its client gets the 250."""
        if not self.busy:
            self.expire(R.SHUTTING_DOWN)

    def idle_limit(self) -> float:
        """timeoutsmtpd for each command (and each piece of DATA), from when the engine
        began waiting for it; during DATA the whole message also has its deadline."""
        timeout = float(max(self.ctx.config.controls.timeoutsmtpd, 1))
        deadline = self.intake.deadline(timeout, self.ctx.config.settings.data_min_rate)
        if deadline is None:
            return timeout
        return min(timeout, deadline - self.last_activity)

    @property
    def idle(self) -> bool:
        """Between transactions: closing now loses nothing the client thinks was sent."""
        return not self.busy and self.sender is None and self.intake.spool is None

    def expire(self, reply: Reply) -> None:
        """Timeout or shutdown: tell the client and close (spec 3.1: ``451 timeout``)."""
        if self.transport is None or self.transport.is_closing():
            return
        self.intake.abort()
        self.write(self.conn.data_to_send() + reply.render(self.conn.enhanced), close=True)
