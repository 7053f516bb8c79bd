"""The local delivery agent: route a local recipient to its Maildir and store the message.

qmail-lspawn + qmail-local + vdelivermail in one (spec 16, 22), without .qmail files yet.
Routing (docs/directory.md): a domain the directory hosts goes to that domain's user; a
domain in control/locals (``me``, ``localhost``) goes to the same local part in
control/defaultdomain (our stand-in for qmail's system users and its ``alias`` user).

Invariants:
- the reports are qmail's texts byte for byte (spec 16.2-16.4, 22);
- infrastructure trouble (disk, permissions, the database) is TEMPORARY, never PERMANENT
  (spec 21.3 warns about the toaster getting this wrong);
- safe to call from several threads at once: the agent holds no mutable state.
"""

from __future__ import annotations

import os
from collections.abc import Set
from typing import BinaryIO, Protocol

from qtoaster.core.durable import DirSyncs
from qtoaster.core.envelope import encode, split_address
from qtoaster.core.errors import TemporaryFailure
from qtoaster.core.home import Home
from qtoaster.delivery.base import Outcome, Result
from qtoaster.delivery.maildir import deliver_maildir
from qtoaster.directory.cache import CachedLookups
from qtoaster.directory.store import Directory

NO_MAILBOX = "Sorry, no mailbox here by that name. (#5.1.1)"
LOOPING = "This message is looping: it already has my Delivered-To line. (#5.4.6)"
MAILDIR_TEMPORARY = "Temporary error on maildir delivery. (#4.3.0)"
UNREADABLE_MESSAGE = "Unable to read message. (#4.3.0)"
# qmail-lspawn says "Unable to read users/cdb. (#4.3.0)"; our users live in the directory.
DIRECTORY_UNAVAILABLE = "Unable to read the user directory. (#4.3.0)"
# qmail-local's success report: did <files>+<forwards>+<programs>/ (qmail-local.c).
DELIVERED = "did 1+0+0/"

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
        self, home: Home, controls: LocalControls, directory: Directory, *, fsync: bool = True
    ) -> None:
        self._home = home
        self._lookups = CachedLookups(directory)
        self._fsync = fsync
        self._dirsyncs = DirSyncs(fsync)
        self._locals = frozenset(domain.lower() for domain in controls.locals)
        self._defaultdomain = controls.defaultdomain.lower()
        self._hostname = controls.me

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
            mailbox = None if target is None else self._lookups.find_mailbox(target)
        except TemporaryFailure:
            return Result(Outcome.TEMPORARY, DIRECTORY_UNAVAILABLE)
        if mailbox is None:
            return Result(Outcome.PERMANENT, NO_MAILBOX)
        local, domain = split_address(recipient)
        dtline = b"Delivered-To: " + encode(f"{local}@{domain}")
        try:
            source = open(message, "rb")  # noqa: SIM115 - closed by the with below
        except OSError as exc:
            return _temporary(UNREADABLE_MESSAGE, exc)
        with source:
            try:
                source.seek(body_offset)
                looping = _has_line(source, dtline)
                source.seek(body_offset)
            except OSError as exc:
                return _temporary(UNREADABLE_MESSAGE, exc)
            if looping:
                return Result(Outcome.PERMANENT, LOOPING)
            prefix = b"Return-Path: <" + encode(sender) + b">\n" + dtline + b"\n"
            try:
                deliver_maildir(
                    mailbox,
                    source,
                    prefix,
                    fsync=self._fsync,
                    hostname=self._hostname,
                    sync_dir=self._dirsyncs.sync,
                )
            except OSError as exc:
                return _temporary(MAILDIR_TEMPORARY, exc)
        return Result(Outcome.SUCCESS, DELIVERED)

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
