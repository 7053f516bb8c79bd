"""Carry out the delivery instructions for one recipient, as qmail-local does (spec 16.3).

The local agent decides *what* to do (the user's Maildir, the lines of a .qmail file, an
alias's targets, a catch-all); this module does it: instructions run top to bottom, the
first failure stops everything and fails the delivery, and all forwards are collected and
queued as ONE new message at the end, only if everything else succeeded.

Invariants:
- the user's own Maildir is checked against the user's Maildir++ quota first (spec 21.2)
  and charged in ``maildirsize`` after the store; only a real over-quota is permanent, a
  disk error is temporary (spec 21.3 NOTE);
- every stored copy starts with ``Return-Path:`` and ``Delivered-To:``; a forwarded copy
  starts with ``Delivered-To:`` only (so a forwarding loop is caught by the loop check);
- the message is streamed from the queue file each time, never held in memory.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from qtoaster.core.durable import DirSyncs
from qtoaster.core.envelope import Envelope, encode, split_address
from qtoaster.core.outcome import Outcome, Result
from qtoaster.delivery.dotqmail import Instruction, Kind
from qtoaster.delivery.mbox import deliver_mbox
from qtoaster.delivery.program import qmail_env, run_program
from qtoaster.maildir import quota as maildirquota
from qtoaster.maildir.create import make_folder
from qtoaster.maildir.deliver import deliver_maildir

MAILDIR_TEMPORARY = "Temporary error on maildir delivery. (#4.3.0)"
MBOX_TEMPORARY = "Unable to write mailbox. (#4.2.1)"
MBOX_LOCK_TIMEOUT = "Timeout on mailbox lock. (#4.2.1)"
# qmail-local with the Maildir++ patch (spec 21.3): a permanent failure, so the sender
# gets a bounce and the queue does not retry for a week.
OVER_QUOTA = "User over quota. (#5.1.1)"
QUOTA_TEMPORARY = "Unable to read the Maildir++ quota. (#4.3.0)"
FORWARD_FAILED = "Unable to forward message: "
NO_QUEUE = "Unable to forward message: no queue to forward through. (#4.3.0)"

# Queues a forwarded copy: (envelope, the message as chunks) -> queue id.
Injector = Callable[[Envelope, "ForwardSource"], str]


@dataclass(frozen=True, slots=True)
class MaildirTarget:
    """The user's own Maildir and the quota that applies to it."""

    maildir: Path
    quota: maildirquota.Quota


@dataclass(slots=True)
class DeliveryJob:
    """One recipient's delivery: the message and the lines qmail-local adds."""

    source: BinaryIO
    body_offset: int
    sender: str
    recipient: str
    hostname: str
    home: Path  # the directory relative .qmail paths start from (vpopmail's user dir)
    mailbox: MaildirTarget | None
    fsync: bool
    dirsyncs: DirSyncs
    files: int = 0
    forwards: list[str] = field(default_factory=list)
    programs: int = 0
    junk_spam: bool = False  # the user files mail the spam scanner marked into .Junk
    inbox: int = 0  # copies stored in the user's own INBOX (not .Junk): the autoresponder's cue

    @property
    def dtline(self) -> bytes:
        local, domain = split_address(self.recipient)
        return b"Delivered-To: " + encode(f"{local}@{domain.lower()}") + b"\n"

    @property
    def rpline(self) -> bytes:
        return b"Return-Path: <" + encode(self.sender) + b">\n"

    def rewind(self) -> BinaryIO:
        self.source.seek(self.body_offset)
        return self.source

    def body_size(self) -> int:
        return os.fstat(self.source.fileno()).st_size - self.body_offset


class ForwardSource:
    """The forwarded message: the Delivered-To line, then the original, in chunks."""

    CHUNK = 64 * 1024

    def __init__(self, job: DeliveryJob) -> None:
        self._job = job

    def __iter__(self) -> Iterator[bytes]:
        yield self._job.dtline
        source = self._job.rewind()
        while chunk := source.read(self.CHUNK):
            yield chunk


def run(job: DeliveryJob, instructions: Sequence[Instruction], inject: Injector | None) -> Result:
    """Carry out ``instructions`` for ``job``; qmail-local's report (``did F+W+P/``)."""
    for instruction in instructions:
        if instruction.kind is Kind.FORWARD:
            job.forwards.append(instruction.value)
            continue
        failure, stop = _one(job, instruction)
        if failure is not None:
            return failure
        if stop:
            break
    report = f"did {job.files}+{len(job.forwards)}+{job.programs}/"
    if job.forwards:
        if inject is None:
            return Result(Outcome.TEMPORARY, NO_QUEUE)
        try:
            qid = inject(Envelope(job.sender, tuple(job.forwards)), ForwardSource(job))
        except Exception as exc:  # qmail-queue failed: nothing was forwarded, retry it all
            return Result(Outcome.TEMPORARY, f"{FORWARD_FAILED}{exc} (#4.3.0)")
        report += f"qp {qid}"
    return Result(Outcome.SUCCESS, report)


def _one(job: DeliveryJob, instruction: Instruction) -> tuple[Result | None, bool]:
    """Run one non-forward instruction: (a failure or None, stop after this line)."""
    if instruction.kind is Kind.PROGRAM:
        local, domain = split_address(job.recipient)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        env.update(
            qmail_env(
                job.sender,
                job.recipient,
                local,
                domain,
                "",
                None,
                job.dtline.decode("utf-8", "surrogateescape"),
                job.rpline.decode("utf-8", "surrogateescape"),
                user=local,
                home=str(job.home),
            )
        )
        outcome = run_program(instruction.value, job.rewind(), cwd=job.home, env=env)
        if outcome.outcome is not Outcome.SUCCESS:
            return Result(outcome.outcome, outcome.report), True
        job.programs += 1
        return None, outcome.ignore_rest
    path = _path(job.home, instruction.value)
    if instruction.kind is Kind.MAILDIR:
        return store_maildir(job, path), False
    return _store_mbox(job, path), False


def store_maildir(job: DeliveryJob, maildir: Path) -> Result | None:
    """Store one copy in ``maildir``, checking the quota if it is the user's own.

    A message smtpd quarantined (mailauth's ``X-Qtoaster-Quarantine: junk``, which only
    smtpd sets: it removes any copy a sender sends), and for a user who chose it
    (``junk_spam``) a message the spam scanner marked (``X-Spam-Flag: YES`` or
    ``X-Spam-Status: Yes``), goes into the user's own Maildir's ``.Junk`` folder, made
    when missing (Maildir++); the quota (maildirsize) stays the Maildir's, which counts
    its folders as Maildir++ does."""
    prefix = job.rpline + job.dtline
    quota = None
    target = maildir
    if job.mailbox is not None and _same(maildir, job.mailbox.maildir):
        quota = job.mailbox.quota
        try:
            if _to_junk(job):
                target = maildir / JUNK
                make_folder(target)
        except OSError as exc:
            return _temporary(MAILDIR_TEMPORARY, exc)
    try:
        size = len(prefix) + job.body_size()
        if quota is not None and not maildirquota.check(
            maildir, quota, size, hostname=job.hostname
        ):
            return Result(Outcome.PERMANENT, OVER_QUOTA)
    except OSError as exc:
        return _temporary(QUOTA_TEMPORARY, exc)
    try:
        deliver_maildir(
            target,
            job.rewind(),
            prefix,
            fsync=job.fsync,
            hostname=job.hostname,
            sync_dir=job.dirsyncs.sync,
        )
    except OSError as exc:
        return _temporary(MAILDIR_TEMPORARY, exc)
    if quota is not None:
        if target is maildir:
            job.inbox += 1
        try:
            maildirquota.record(maildir, size)
        except OSError:
            pass  # stored: the next recalculation (at most 15 minutes) corrects the count
    job.files += 1
    return None


JUNK = ".Junk"
_MARK = b"x-qtoaster-quarantine:"
_SPAM_FLAG = b"x-spam-flag:"
_SPAM_STATUS = b"x-spam-status:"
_HEAD_MAX = 256 << 10  # header bytes searched for the marks


def _to_junk(job: DeliveryJob) -> bool:
    """Whether the message goes to .Junk: mailauth's quarantine mark, or (``junk_spam``)
    the spam scanner's.  Only the first X-Spam-Flag and X-Spam-Status count: our spamd
    check puts its lines on top of the message (delivery/vacation.py spam_marked)."""
    source = job.rewind()
    read = 0
    seen: set[bytes] = set()
    for line in source:
        read += len(line)
        if line in (b"\n", b"\r\n") or read > _HEAD_MAX:
            return False
        lowered = line.lower()
        if lowered.startswith(_MARK):
            return line[len(_MARK) :].strip().lower() == b"junk"
        if not job.junk_spam:
            continue
        for name in (_SPAM_FLAG, _SPAM_STATUS):
            if lowered.startswith(name) and name not in seen:
                seen.add(name)
                value = lowered[len(name) :].strip()
                if value.replace(b",", b" ").split()[:1] == [b"yes"]:
                    return True
    return False


def _store_mbox(job: DeliveryJob, path: Path) -> Result | None:
    try:
        deliver_mbox(path, job.rewind(), sender=job.sender, prefix=job.rpline + job.dtline)
    except TimeoutError:
        return Result(Outcome.TEMPORARY, MBOX_LOCK_TIMEOUT)
    except OSError as exc:
        return _temporary(MBOX_TEMPORARY, exc)
    job.files += 1
    return None


def _path(home: Path, written: str) -> Path:
    """A .qmail path: absolute, or relative to the user's directory (``./Maildir/``)."""
    return Path(written) if written.startswith("/") else home / written


def _same(a: Path, b: Path) -> bool:
    return os.path.normpath(a) == os.path.normpath(b)


def _temporary(report: str, exc: OSError) -> Result:
    """qmail's text plus the errno text, so the log says which disk problem it was."""
    detail = exc.strerror or str(exc)
    return Result(Outcome.TEMPORARY, f"{report} {detail}")
