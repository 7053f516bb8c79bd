"""The local delivery agent: route a local recipient and carry out its delivery.

qmail-lspawn + qmail-local + vdelivermail in one (spec 16, 22; docs/directory.md).
Routing: a domain the directory hosts goes to that domain's address; a domain in
control/locals (``me``, ``localhost``) goes to the same local part in
control/defaultdomain (our stand-in for qmail's system users and its ``alias`` user).
Then, as vdelivermail: the address's aliases (forwards, with or without a copy kept);
else the user's mailbox, through the user's ``.qmail`` file if it has one; else the
domain's handling of unknown users (bounce, delete, or a catch-all address).

A user's choices (docs/vacation.md): mail the spam scanner marked goes to ``.Junk``
(``junk_spam``, instructions.py), and a message stored in the INBOX of a user on
vacation is answered once per sender and period (autoreply.py), the reply queued here.

SRS (docs/srs.md): a forwarded copy leaves with its sender rewritten at the forwarding
domain, unless the sender is null, the double-bounce sender or in a domain delivered
here; mail to an SRS address of a local domain (a bounce of a forward) is sent on to the
address it was made from. Both ask ``srs`` (the auth role when started as root).

Invariants:
- the reports are qmail's texts byte for byte (spec 16.2-16.4, 21.3, 22);
- infrastructure trouble (disk, permissions, the database) is TEMPORARY, never PERMANENT
  (spec 21.3 warns about the toaster getting this wrong);
- safe to call from several threads at once: the agent holds no mutable state;
- a forward is never queued with its sender unrewritten when SRS is on and the rewrite
  failed: the delivery is deferred (TEMPORARY) instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Set
from functools import partial
from typing import BinaryIO, Protocol

from qtoaster.config.mailsettings import SrsSettings
from qtoaster.core.clock import Clock, SystemClock
from qtoaster.core.durable import DirSyncs
from qtoaster.core.envelope import DOUBLE_BOUNCE_SENDER, Envelope, split_address
from qtoaster.core.errors import TemporaryFailure
from qtoaster.core.home import Home
from qtoaster.core.outcome import Outcome, Result
from qtoaster.delivery import autoreply, instructions
from qtoaster.delivery.dotqmail import DotQmailError, Instruction, Kind, read_dotqmail
from qtoaster.delivery.instructions import DeliveryJob, ForwardSource, MaildirTarget
from qtoaster.directory.cache import CachedLookups, Lookups
from qtoaster.directory.model import Recipient, UserInfo, Vacation
from qtoaster.directory.schema import UNKNOWN_BOUNCE, UNKNOWN_DELETE, UserFlag
from qtoaster.mailauth.srs import SrsError, SrsService, is_srs
from qtoaster.maildir.quota import Quota
from qtoaster.queue.origin import VACATION as ORIGIN_VACATION
from qtoaster.queue.store import QueueStore, commit_message

NO_MAILBOX = "Sorry, no mailbox here by that name. (#5.1.1)"
LOOPING = "This message is looping: it already has my Delivered-To line. (#5.4.6)"
UNREADABLE_MESSAGE = "Unable to read message. (#4.3.0)"
# qmail-lspawn says "Unable to read users/cdb. (#4.3.0)"; our users live in the directory.
DIRECTORY_UNAVAILABLE = "Unable to read the user directory. (#4.3.0)"
# qmail-local's success report for one stored copy: did <files>+<forwards>+<programs>/.
DELIVERED = "did 1+0+0/"
# What vdelivermail's "delete" does with mail for unknown users: accept and drop it.
DISCARDED = "did 0+0+0/"
INVALID_SRS = "Sorry, invalid SRS address ({reason}). (#5.1.1)"
SRS_UNAVAILABLE = "Unable to rewrite or check an SRS address now: "
MAILDIR_TEMPORARY = instructions.MAILDIR_TEMPORARY
OVER_QUOTA = instructions.OVER_QUOTA
# The user's own mailbox as an instruction (the default delivery, ``./Maildir/``).
_MAILBOX = Instruction(Kind.MAILDIR, "./Maildir/")

# The loop check reads at most this much of the header section.
HEADER_LIMIT = 64 * 1024


class LocalControls(Protocol):
    """The control files the agent reads (qtoaster.config.control.Controls has them)."""

    @property
    def locals(self) -> Set[str]: ...
    @property
    def defaultdomain(self) -> str: ...
    @property
    def me(self) -> str: ...


class LocalAgent:
    def __init__(
        self,
        home: Home,
        controls: LocalControls,
        directory: Lookups,
        *,
        fsync: bool = True,
        queue: QueueStore | None = None,
        srs: SrsService | None = None,
        srs_settings: SrsSettings | None = None,
        clock: Clock | None = None,
    ) -> None:
        """``srs``: who rewrites forwarded senders and reverses SRS addresses; None (or
        ``[srs] enabled`` false) leaves senders as they are, as qmail does."""
        self._home = home
        self._lookups = CachedLookups(directory)
        self._fsync = fsync
        self._dirsyncs = DirSyncs(fsync)
        self._locals = frozenset(domain.lower() for domain in controls.locals)
        self._defaultdomain = controls.defaultdomain.lower()
        self._hostname = controls.me
        self._queue = queue
        settings = srs_settings or SrsSettings()
        self._srs = srs if settings.enabled else None
        self._srs_domain = settings.domain
        self._clock = clock or SystemClock()

    def is_local(self, recipient: str) -> bool:
        """Whether ``recipient`` is delivered here (raises TemporaryFailure if the
        directory cannot be read)."""
        return self._route(recipient) is not None

    def deliver(
        self, message: str | os.PathLike[str], body_offset: int, sender: str, recipient: str
    ) -> Result:
        """Deliver the message stored at ``message`` from ``body_offset`` to ``recipient``."""
        try:
            target = self._route(recipient)
            if target is not None and self._srs is not None and is_srs(target):
                return self._srs_back(message, body_offset, sender, recipient, target)
            found = None if target is None else self._lookups.resolve(target)
        except TemporaryFailure:
            return Result(Outcome.TEMPORARY, DIRECTORY_UNAVAILABLE)
        if found is None:
            return Result(Outcome.PERMANENT, NO_MAILBOX)
        plan = self._plan(found)
        if isinstance(plan, Result):
            return plan
        assert target is not None
        return self._carry_out(
            message, body_offset, sender, recipient, target, found.user, plan, found.vacation
        )

    def _srs_back(
        self,
        message: str | os.PathLike[str],
        body_offset: int,
        sender: str,
        recipient: str,
        target: str,
    ) -> Result:
        """Mail to one of our SRS addresses: on to the address it was made from."""
        assert self._srs is not None
        try:
            original = self._srs.reverse(target)
        except SrsError as exc:
            return Result(Outcome.PERMANENT, INVALID_SRS.format(reason=exc.reason))
        except TemporaryFailure as exc:
            return Result(Outcome.TEMPORARY, f"{SRS_UNAVAILABLE}{exc} (#4.3.0)")
        steps = [Instruction(Kind.FORWARD, original)]
        return self._carry_out(message, body_offset, sender, recipient, target, None, steps)

    def _carry_out(
        self,
        message: str | os.PathLike[str],
        body_offset: int,
        sender: str,
        recipient: str,
        target: str,
        user: UserInfo | None,
        plan: list[Instruction] | None,
        vacation: Vacation | None = None,
    ) -> Result:
        """Open the message, check for a loop, and follow ``plan`` (None: the user's
        .qmail file or mailbox); then answer it if ``vacation`` says so."""
        try:
            source = open(message, "rb")  # noqa: SIM115 - closed by the with below
        except OSError as exc:
            return _temporary(UNREADABLE_MESSAGE, exc)
        with source:
            job = self._job(source, body_offset, sender, recipient, user)
            try:
                source.seek(body_offset)
                looping = _has_line(source, job.dtline.rstrip(b"\n"))
            except OSError as exc:
                return _temporary(UNREADABLE_MESSAGE, exc)
            if looping:
                return Result(Outcome.PERMANENT, LOOPING)
            steps = plan if plan is not None else self._dotqmail(job)
            if isinstance(steps, Result):
                return steps
            inject = partial(self._inject, split_address(target)[1]) if self._queue else None
            result = instructions.run(job, steps, inject)
            if result.outcome is Outcome.SUCCESS and vacation is not None and job.inbox:
                self._answer(job, user, vacation)
            return result

    def _answer(self, job: DeliveryJob, user: UserInfo | None, vacation: Vacation) -> None:
        """The autoresponder's turn, once the message is in the user's INBOX."""
        if self._queue is None or user is None:
            return
        queue = self._queue

        def inject(envelope: Envelope, chunks: Iterable[bytes]) -> str:
            return commit_message(queue, envelope, ORIGIN_VACATION, chunks)

        autoreply.answer(job, user.address, vacation, inject, self._clock.time())

    def _plan(self, found: Recipient) -> list[Instruction] | Result | None:
        """What to do for ``found``: instructions, a final result, or None for "the
        user's mailbox, through its .qmail file if it has one"."""
        usable = found.user is not None and not found.user.flags & UserFlag.BOUNCE_MAIL
        if found.forwards:
            steps = [
                Instruction(Kind.MAILDIR if t.startswith("/") else Kind.FORWARD, t)
                for t in found.forwards
            ]
            if found.keep_copy and usable:
                steps.append(_MAILBOX)
            return steps
        if usable:
            return None
        if found.unknown_user == UNKNOWN_BOUNCE:
            return Result(Outcome.PERMANENT, NO_MAILBOX)
        if found.unknown_user == UNKNOWN_DELETE:
            return Result(Outcome.SUCCESS, DISCARDED)
        return [Instruction(Kind.FORWARD, found.unknown_user)]  # the catch-all address

    def _dotqmail(self, job: DeliveryJob) -> list[Instruction] | Result:
        """The user's .qmail file (in the user's directory, as vdelivermail reads it), or
        the default delivery to the Maildir when there is none or it is empty (0 bytes).

        A file with only comments is no "empty" file: qmail-local obeys it and delivers
        nowhere, the usual way to discard mail (``#`` alone, dot-qmail(5), spec 16.2)."""
        try:
            dotqmail = read_dotqmail(job.home / ".qmail")
        except DotQmailError as exc:
            outcome = Outcome.TEMPORARY if exc.temporary else Outcome.PERMANENT
            return Result(outcome, exc.report)
        if dotqmail is None:
            return [_MAILBOX]
        return list(dotqmail.instructions)

    def _job(
        self, source: BinaryIO, body_offset: int, sender: str, recipient: str, user: UserInfo | None
    ) -> DeliveryJob:
        mailbox = None
        home = self._home.domains
        junk_spam = False
        if user is not None:
            mailbox = MaildirTarget(user.maildir, _quota(user))
            home = user.maildir.parent
            junk_spam = user.junk_spam
        return DeliveryJob(
            source=source,
            body_offset=body_offset,
            sender=sender,
            recipient=recipient,
            hostname=self._hostname,
            home=home,
            mailbox=mailbox,
            fsync=self._fsync,
            dirsyncs=self._dirsyncs,
            junk_spam=junk_spam,
        )

    def _inject(self, domain: str, envelope: Envelope, source: ForwardSource) -> str:
        """Queue a forwarded copy, its sender rewritten (SRS) at ``domain`` (the
        forwarding recipient's, or ``[srs] domain``); TemporaryFailure when the rewrite
        cannot be done now (instructions.run defers the delivery)."""
        assert self._queue is not None
        sender = self._rewritten(envelope.sender, self._srs_domain or domain)
        forwarded = Envelope(sender, envelope.recipients)
        return commit_message(self._queue, forwarded, "forward", source)

    def _rewritten(self, sender: str, domain: str) -> str:
        if self._srs is None or not sender or sender == DOUBLE_BOUNCE_SENDER:
            return sender
        _, sender_domain = split_address(sender)
        if not sender_domain or self._route(sender) is not None:
            return sender  # a sender delivered here: SPF at the next hop is ours anyway
        try:
            return self._srs.forward(sender, domain)
        except ValueError:
            return sender  # no local part to keep: nothing a bounce could come back to

    def _route(self, recipient: str) -> str | None:
        """The directory address that receives mail for ``recipient``, or None if remote."""
        local, domain = split_address(recipient)
        if not domain:
            return None
        # A hosted domain has real mailboxes: it wins even if control/locals names it too.
        if self._lookups.hosts_domain(domain):
            return f"{local}@{domain}"
        if domain in self._locals:
            return f"{local}@{self._defaultdomain}"
        return None


def _quota(user: UserInfo) -> Quota:
    # A limit of 0 means none, as in Courier and Dovecot (delivery/quota.py).
    return Quota(user.quota or None, user.quota_messages or None)


def _has_line(source: BinaryIO, wanted: bytes) -> bool:
    """Whether the header section (up to the first empty line) has exactly ``wanted``.

    qmail-local compares whole header lines (spec 16.3); LF or CRLF endings both work.
    """
    consumed = 0
    while consumed < HEADER_LIMIT:
        line = source.readline(HEADER_LIMIT - consumed)
        if not line:
            return False
        consumed += len(line)
        content = line.removesuffix(b"\n").removesuffix(b"\r")
        if not content:
            return False
        if content == wanted:
            return True
    return False


def _temporary(report: str, exc: OSError) -> Result:
    """qmail's text plus the errno text, so the log says which disk problem it was."""
    detail = exc.strerror or str(exc)
    return Result(Outcome.TEMPORARY, f"{report} {detail}")
