"""What the IMAP session uses of a user's Maildir++: the values and the two interfaces.

``maildir/store.py`` implements :class:`Store` and :class:`View` over a :class:`MailFs`
(``maildir/fs.py``): :class:`~qtoaster.maildir.fs.LocalFs` opens the files itself (the
mailbox broker, and a server not started as root), ``broker/fsclient.py``'s ``BrokerFs``
asks the mailbox broker for each operation (imapd started as root cannot enter a Maildir:
docs/security.md). Everything here is blocking: the session calls it in a thread.

Folder names are IMAP names with ``.`` as the hierarchy delimiter, as Dovecot and
Courier lay Maildir++ out: ``INBOX`` is the Maildir itself, ``Sent`` is ``.Sent/``,
``a.b`` is ``.a.b/``. Names are Unicode (the session decodes modified UTF-7); on disk they
are Dovecot's ``UTF-8`` folder names.

Invariants every implementation keeps:
- a message's UID never changes and is never reused within a UIDVALIDITY; UIDVALIDITY
  changes only when the UID state of a folder is lost and rebuilt;
- every change of flags, every new message and every expunge raises the folder's
  HIGHESTMODSEQ, and the message's (or the expunged UID's) MODSEQ becomes that value
  (RFC 7162);
- nothing a crash interrupts leaves a message lost or listed twice: message files are the
  truth, the UID state is rebuilt from them for what it does not know.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from qtoaster.core.errors import QtoasterError

# System flags as IMAP spells them; Maildir info letters: D F R S T (Draft Flagged
# Replied Seen Trashed=\Deleted). Keywords are any other atom.
SEEN = "\\Seen"
ANSWERED = "\\Answered"
FLAGGED = "\\Flagged"
DELETED = "\\Deleted"
DRAFT = "\\Draft"
RECENT = "\\Recent"
SYSTEM_FLAGS = (SEEN, ANSWERED, FLAGGED, DELETED, DRAFT)


class StoreError(QtoasterError):
    """A request the store refuses; ``code`` is the IMAP response code the session puts in
    ``NO [CODE] text``: NONEXISTENT, ALREADYEXISTS, OVERQUOTA, TOOBIG, CANNOT, NOPERM,
    INUSE, LIMIT, SERVERBUG (a temporary failure: disk, broker)."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


class UidValidityChanged(StoreError):
    """The selected folder's UID state was lost and rebuilt with a new UIDVALIDITY while
    a view had it open: the client's numbering is void (RFC 9051 2.3.1.1); the session
    ends with ``* BYE``, as Dovecot does, so the client resynchronises."""

    def __init__(self) -> None:
        super().__init__("SERVERBUG", "the folder's UID state was rebuilt")


@dataclass(frozen=True, slots=True)
class MessageMeta:
    """One message of a selected folder: what FLAGS, UID, MODSEQ, RFC822.SIZE,
    INTERNALDATE and SEARCH need without opening the file."""

    uid: int
    flags: frozenset[str]  # system flags and keywords; never \\Recent
    modseq: int
    size: int  # RFC822.SIZE: the message with CRLF line ends (the S=/W= in the name, or measured)
    internaldate: float  # seconds since the epoch (the file's mtime, APPEND's date)
    recent: bool = False  # first seen by this view (IMAP4rev1 \\Recent)


@dataclass(frozen=True, slots=True)
class FolderInfo:
    """One folder for LIST: ``special_use`` like ``("\\\\Sent",)``; ``selectable`` False for
    a parent that exists only as part of a deeper name (\\Noselect / \\NonExistent)."""

    name: str
    subscribed: bool
    has_children: bool
    special_use: tuple[str, ...] = ()
    selectable: bool = True


@dataclass(frozen=True, slots=True)
class FolderStatus:
    messages: int
    recent: int
    uidnext: int
    uidvalidity: int
    unseen: int
    deleted: int
    size: int  # RFC 8438 STATUS=SIZE: sum of RFC822.SIZE
    highestmodseq: int


@dataclass(frozen=True, slots=True)
class QuotaUsage:
    """The Maildir++ quota (maildirsize) of the whole mailbox: one root, ``""``."""

    storage_used: int  # bytes
    storage_limit: int | None
    messages_used: int
    messages_limit: int | None


@dataclass(frozen=True, slots=True)
class Changes:
    """What :meth:`View.refresh` found since the view's last look (other sessions,
    delivery, POP3): ``expunged`` UIDs (ascending), ``added`` new messages (ascending
    UID, appended at the end of the view), ``flags`` messages whose flags or modseq
    changed (their new meta)."""

    expunged: tuple[int, ...] = ()
    added: tuple[MessageMeta, ...] = ()
    flags: tuple[MessageMeta, ...] = ()


@dataclass(frozen=True, slots=True)
class CopyResult:
    """COPYUID's values (RFC 4315): the destination's UIDVALIDITY and the UIDs pairwise."""

    uidvalidity: int
    source_uids: tuple[int, ...]
    dest_uids: tuple[int, ...]


class MailFs(Protocol):
    """The file operations the store needs, confined to one user's Maildir (paths are
    relative to it, ``/``-separated, never absolute, never ``..``). LocalFs does them
    itself; BrokerFs has the mailbox broker do them. Errors: FileNotFoundError,
    FileExistsError, OSError (anything else: the store answers SERVERBUG)."""

    def listdir(self, rel: str) -> list[str]: ...

    def stat(self, rel: str) -> tuple[int, float]:
        """(size, mtime)."""
        ...

    def open_read(self, rel: str) -> BinaryIO: ...

    def open_many(self, rels: Sequence[str]) -> list[BinaryIO | None]:
        """One read-only file per path, None for a path that is gone."""
        ...

    def read_file(self, rel: str, limit: int) -> bytes | None:
        """A small file's bytes (state files), None if it does not exist."""
        ...

    def write_atomic(self, rel: str, data: bytes) -> None:
        """Write a temporary file beside ``rel``, fsync, rename over ``rel``."""
        ...

    def append_file(self, rel: str, data: bytes) -> None:
        """Append (create if missing) and fsync: the UID state's log."""
        ...

    def rename_many(self, pairs: Sequence[tuple[str, str]]) -> list[str | None]:
        """rename(2) each pair; per pair None or the error (``"ENOENT"``...)."""
        ...

    def unlink_many(self, rels: Sequence[str]) -> list[str | None]: ...

    def mkdir(self, rel: str) -> None: ...

    def remove_folder(self, rel: str) -> None:
        """Remove a Maildir++ folder directory and everything in it (DELETE)."""
        ...

    def rename_folder(self, old: str, new: str) -> None: ...

    def deliver(self, folder: str, data: bytes, info: str, mtime: float | None) -> str:
        """APPEND/COPY: write ``data`` into ``folder``'s tmp/, fsync, move to cur/ named
        ``<unique>,S=<size>:2,<info>``; record it in maildirsize like local delivery.
        Returns the name (relative to the folder). Raises StoreError("OVERQUOTA")."""
        ...

    def link_copy(self, src: str, folder: str, info: str) -> str:
        """COPY of one message file into ``folder`` (hard link where possible, else a
        copy), counted in maildirsize; returns the new name relative to the folder."""
        ...

    def lock(self, rel: str) -> int:
        """An fd of ``rel`` (created if missing) opened for writing, for flock(2)."""
        ...

    def quota(self) -> QuotaUsage: ...


class View(Protocol):
    """A selected (or examined) folder. Sequence numbers are 1-based positions in
    :attr:`messages`; the session keeps them in step by applying :meth:`refresh`'s
    :class:`Changes` (expunges are reported to it, never applied behind its back)."""

    name: str
    readonly: bool
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    messages: list[MessageMeta]

    def refresh(self) -> Changes: ...

    def open_messages(self, uids: Sequence[int]) -> list[BinaryIO | None]:
        """The files of ``uids`` in order (None for one expunged meanwhile)."""
        ...

    def store(
        self, uids: Sequence[int], mode: str, flags: Iterable[str], unchangedsince: int | None
    ) -> tuple[list[MessageMeta], list[int]]:
        """Set (``""``), add (``"+"``) or remove (``"-"``) flags; returns the changed
        messages' new metas and the UIDs refused because their MODSEQ was above
        ``unchangedsince`` (RFC 7162 MODIFIED)."""
        ...

    def copy(self, uids: Sequence[int], dest: str) -> CopyResult: ...

    def move(self, uids: Sequence[int], dest: str) -> CopyResult:
        """COPY then expunge here; the expunges come out of the next :meth:`refresh`."""
        ...

    def expunge(self, uids: Sequence[int] | None) -> None:
        """Remove the messages flagged \\Deleted (only those in ``uids`` when given); the
        expunges come out of the next :meth:`refresh`."""
        ...

    def vanished(self, modseq: int, uids: Sequence[int] | None) -> list[int]:
        """UIDs expunged after ``modseq`` (QRESYNC, RFC 7162 3.2.5.2); among ``uids`` if
        given. May return more than exactly those (RFC allows)."""
        ...

    def watch_dirs(self) -> list[str]:
        """The directories whose changes IDLE waits for (relative to the Maildir)."""
        ...

    def close(self) -> None: ...


class Store(Protocol):
    """One logged-in user's mailbox (all folders)."""

    def prepare(self) -> None:
        """First login: create Sent, Drafts, Trash, Junk, Archive with their SPECIAL-USE
        flags if missing (only once per mailbox; a deleted one is not brought back)."""
        ...

    def folders(self) -> list[FolderInfo]: ...

    def create(self, name: str, special_use: Sequence[str] = ()) -> None: ...

    def delete(self, name: str) -> None: ...

    def rename(self, old: str, new: str) -> None:
        """RENAME; renaming INBOX moves its messages into the new folder (RFC 9051 6.3.6)."""
        ...

    def subscribe(self, name: str, subscribed: bool) -> None: ...

    def status(self, name: str) -> FolderStatus: ...

    def select(self, name: str, readonly: bool) -> View: ...

    def append(
        self, name: str, data: bytes, flags: Sequence[str], date: float | None
    ) -> tuple[int, int]:
        """Returns (uidvalidity, uid) for APPENDUID."""
        ...

    def quota(self) -> QuotaUsage: ...
