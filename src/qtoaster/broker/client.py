"""The clients' side of the mailbox broker (qtoaster.mailboxd): pop3d's mailbox, smtpd's
quota reading.

pop3d runs as a user that cannot read a Maildir (decision 0007). At login it opens a
:class:`BrokerConnection` and sends the ticket the auth role gave it; the broker locks
the Maildir for that connection's life and answers the listing, from which a
:class:`BrokerMailbox` is built: the same object pop3d's transaction used before
(:class:`qtoaster.maildir.mailbox.Mailbox`, DELE marks kept here), except that a message
is opened by asking the broker for its descriptor and UPDATE is one COMMIT.

Invariants:
- blocking calls with a deadline (:data:`TIMEOUT`): OPEN and COMMIT run in pop3d's
  executor; FETCH runs on the loop like the file open it replaces (the broker answers it
  from its own thread, never behind a scan or a commit);
- one request in flight per connection, so a descriptor received belongs to the answer it
  came with; descriptors arriving with an answer that has none are closed;
- any failure to talk to the broker is an OSError (pop3d answers as for a disk error,
  chkuser 451), never an acceptance;
- closing the connection without COMMIT leaves the mailbox as it was (the broker unlocks).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from qtoaster.broker.protocol import (
    MAX_ANSWER,
    Answer,
    CommitRequest,
    FetchRequest,
    OpenRequest,
    ProtocolError,
    QuotaRequest,
    Request,
    decode_answer,
    encode_request,
)
from qtoaster.core.errors import TemporaryFailure
from qtoaster.directory.model import Recipient
from qtoaster.maildir.mailbox import Mailbox, Message, read_upto

TIMEOUT = 30.0
_RECV = 256 * 1024


class BrokerError(TemporaryFailure, OSError):
    """The broker refused or failed; ``answer`` is its answer (None: no answer)."""

    def __init__(self, text: str, answer: Answer | None = None) -> None:
        super().__init__(text)
        self.answer = answer


class BrokerConnection:
    """One connection to the broker; for pop3d it holds the session's mailbox lock."""

    def __init__(self, path: Path, timeout: float = TIMEOUT) -> None:
        self.sock: socket.socket | None = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.settimeout(timeout)
            self.sock.connect(os.fspath(path))
        except BaseException:
            self.sock.close()
            raise

    def ask(self, request: Request) -> tuple[Answer, int | None]:
        """The answer to ``request`` and the descriptor that came with it (the caller's
        to close); BrokerError when the connection is closed or misbehaves."""
        sock = self.sock
        if sock is None:
            raise BrokerError("mailbox broker connection closed")
        received: list[int] = []
        try:
            sock.sendall(encode_request(request))
            pieces: list[bytes] = []
            size = 0
            while True:
                data, fds, _flags, _addr = socket.recv_fds(sock, _RECV, 1)
                received += fds
                if not data:
                    raise BrokerError("mailbox broker closed the connection")
                pieces.append(data)
                size += len(data)
                if data.endswith(b"\n"):
                    break
                if size > MAX_ANSWER:
                    raise BrokerError("mailbox broker answer too long")
            answer = decode_answer(b"".join(pieces))
        except (OSError, ProtocolError) as exc:
            for fd in received:
                os.close(fd)
            self.release()
            if isinstance(exc, BrokerError):
                raise
            raise BrokerError(f"mailbox broker: {exc}") from exc
        for extra in received[1:]:
            os.close(extra)
        return answer, received[0] if received else None

    def release(self) -> None:
        """Close the connection (the broker unlocks the mailbox); again does nothing."""
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()


class BrokerMailbox(Mailbox):
    """pop3d's mailbox: the broker's snapshot, DELE marks kept here."""

    def __init__(self, connection: BrokerConnection, answer: Answer) -> None:
        messages = [
            Message(number, uid, uid, size)
            for number, (uid, size, _disk) in enumerate(answer.messages, start=1)
        ]
        disk = [disk for _uid, _size, disk in answer.messages]
        super().__init__(Path(answer.maildir), messages, disk)
        self.connection = connection

    def _fetch(self, n: int) -> int:
        self.get(n)  # MessageNumberError with qmail-pop3d's text, before asking
        answer, fd = self.connection.ask(FetchRequest(n))
        if not answer.ok or fd is None:
            if fd is not None:
                os.close(fd)
            raise BrokerError(answer.text or "unable to open that message", answer)
        return fd

    def open_message(self, n: int) -> BinaryIO:
        return os.fdopen(self._fetch(n), "rb")

    def read_small(self, n: int, limit: int) -> bytes | None:
        self.get(n)
        if self.disk_sizes[n - 1] > limit:
            return None  # streamed from open_message
        return read_upto(self._fetch(n), self.disk_sizes[n - 1], limit)

    def commit(self) -> list[str]:
        """UPDATE by the broker; its unlink problems. OSError when it cannot be asked."""
        deleted = tuple(m.number for m in self.messages if self.is_deleted(m.number))
        answer, fd = self.connection.ask(CommitRequest(deleted))
        if fd is not None:
            os.close(fd)
        if not answer.ok:
            raise BrokerError(answer.text or "mailbox broker refused the update", answer)
        return list(answer.problems)


def open_mailbox(path: Path, ticket: str) -> BrokerMailbox:
    """Connect, send OPEN(ticket): the locked mailbox, or BrokerError whose ``answer``
    says why not (``in-use``, ``maildir`` with qmail-pop3d's text, ...)."""
    connection = BrokerConnection(path)
    try:
        answer, fd = connection.ask(OpenRequest(ticket))
        if fd is not None:
            os.close(fd)
        if not answer.ok:
            raise BrokerError(answer.text or answer.error, answer)
        return BrokerMailbox(connection, answer)
    except BaseException:
        connection.release()
        raise


def quota_percent(path: Path) -> Callable[[Recipient], int]:
    """smtpd's CHKUSER_MBXQUOTA reading (policy.checks.chkuser): the broker reads the
    Maildir; OSError when it cannot be asked (chkuser answers 451)."""

    def percent(found: Recipient) -> int:
        user = found.user
        if user is None:
            return 0
        request = QuotaRequest(str(user.maildir), user.quota or None, user.quota_messages or None)
        connection = BrokerConnection(path)
        try:
            answer, fd = connection.ask(request)
        finally:
            connection.release()
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        if not answer.ok:
            raise BrokerError(answer.text or answer.error, answer)
        return answer.percent

    return percent
