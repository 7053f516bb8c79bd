"""The IMAP commands the sans-IO engine hands to the imapd session, as typed values.

One frozen dataclass per command (RFC 9051 6, RFC 3501 6 and the extensions qtoaster
offers). The engine (``protocols/imap/server.py``) parses a complete command, literals
included, into one of these and wraps it in :class:`Command` with its tag and whether it
came as ``UID <command>``. Strings are decoded from the wire as UTF-8 with surrogateescape
(every byte the client sent is recoverable); mailbox names are given as the client wrote
them (IMAP4rev1's modified UTF-7 is decoded by the session, which knows whether UTF8=ACCEPT
was enabled). ``INBOX`` is matched case-insensitively by the session, not here.

Invariants: every value here is immutable and already syntactically valid (a sequence set
has no zero, a partial has ``length >= 1``...); semantic checks (does the mailbox exist,
is the UID valid) are the session's.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

# -- values shared by several commands ------------------------------------------------------

# ``*`` in a sequence set: the highest message number or UID in the mailbox (RFC 9051 9,
# seq-number). ``$`` (RFC 5182 SEARCHRES) is :data:`SAVED`.
STAR = -1


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """``1:3,5,7:*``: ranges as written (``(low, high)`` with :data:`STAR` for ``*``, a single
    number as ``(n, n)``). ``saved`` is ``$`` (RFC 5182: the result of the last SEARCH
    with SAVE), in which case ``ranges`` is empty. Resolving against a mailbox is the
    session's: ``4:2`` is ``2:4`` and ``*`` is the largest number (RFC 9051 9)."""

    ranges: tuple[tuple[int, int], ...]
    saved: bool = False


@dataclass(frozen=True, slots=True)
class Section:
    """A BODY[...] / BINARY[...] section (RFC 9051 6.4.5): ``part`` the MIME part numbers
    (``(1, 2)`` for ``1.2``; empty for the whole message), ``text`` one of ``""`` (the part
    itself), ``HEADER``, ``HEADER.FIELDS``, ``HEADER.FIELDS.NOT``, ``TEXT``, ``MIME``;
    ``fields`` the upper-cased field names of HEADER.FIELDS(.NOT)."""

    part: tuple[int, ...] = ()
    text: str = ""
    fields: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FetchItem:
    """One FETCH data item (RFC 9051 6.4.5). ``name`` upper-cased: FLAGS, INTERNALDATE,
    RFC822.SIZE, ENVELOPE, BODYSTRUCTURE, BODY (without section: the non-extensible
    BODYSTRUCTURE), UID, MODSEQ, RFC822, RFC822.HEADER, RFC822.TEXT, BODY[] (``section`` set),
    BINARY, BINARY.SIZE, SAVEDATE, EMAILID, THREADID. ``peek`` for BODY.PEEK / BINARY.PEEK;
    ``partial`` is ``<offset.length>`` (``(offset, length)``). The macros ALL, FAST, FULL
    are expanded by the parser."""

    name: str
    section: Section | None = None
    peek: bool = False
    partial: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class SearchKey:
    """One node of a SEARCH program (RFC 9051 6.4.4). ``name`` upper-cased: ALL, ANSWERED,
    DELETED, DRAFT, FLAGGED, SEEN, UNANSWERED, UNDELETED, UNDRAFT, UNFLAGGED, UNSEEN, NEW,
    OLD, RECENT, KEYWORD/UNKEYWORD (``value`` the keyword), BCC/CC/FROM/SUBJECT/TO/BODY/
    TEXT (``value`` the string), HEADER (``header`` field name, ``value``), BEFORE/ON/SINCE/
    SENTBEFORE/SENTON/SENTSINCE (``date``), LARGER/SMALLER (``number``), UID (``sequence``),
    SEQSET (a bare sequence set: ``sequence``), MODSEQ (``number``; RFC 7162), NOT (one
    child), OR (two children), AND (a parenthesised list: children, all must match),
    YOUNGER/OLDER (``number`` seconds, RFC 5032) when offered."""

    name: str
    value: str = ""
    header: str = ""
    date: datetime.date | None = None
    number: int = 0
    sequence: SequenceSet | None = None
    children: tuple[SearchKey, ...] = ()


# -- the commands -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Capability:
    pass


@dataclass(frozen=True, slots=True)
class Noop:
    pass


@dataclass(frozen=True, slots=True)
class Logout:
    pass


@dataclass(frozen=True, slots=True)
class StartTls:
    pass


@dataclass(frozen=True, slots=True)
class Login:
    user: str
    password: str


@dataclass(frozen=True, slots=True)
class Authenticate:
    """AUTHENTICATE mechanism [initial-response] (SASL-IR, RFC 4959). ``initial`` is the
    base64 text as sent (``"="`` for an empty one), None when absent. The exchange's
    continuation lines come as :class:`AuthLine` events (see server.py)."""

    mechanism: str
    initial: str | None = None


@dataclass(frozen=True, slots=True)
class Enable:
    capabilities: tuple[str, ...]  # upper-cased


@dataclass(frozen=True, slots=True)
class Id:
    """ID (RFC 2971): None for NIL, else the field/value pairs (value None for NIL)."""

    params: tuple[tuple[str, str | None], ...] | None


@dataclass(frozen=True, slots=True)
class Compress:
    mechanism: str  # upper-cased; DEFLATE is the only one defined (RFC 4978)


@dataclass(frozen=True, slots=True)
class Select:
    """SELECT / EXAMINE (``readonly``) with RFC 7162's CONDSTORE and QRESYNC parameters:
    ``qresync`` = (uidvalidity, modseq, known uids or None, (seq match, uid match) or
    None)."""

    mailbox: str
    readonly: bool = False
    condstore: bool = False
    qresync: tuple[int, int, SequenceSet | None, tuple[SequenceSet, SequenceSet] | None] | None = (
        None
    )


@dataclass(frozen=True, slots=True)
class Create:
    mailbox: str
    special_use: tuple[str, ...] = ()  # RFC 6154 CREATE-SPECIAL-USE: ("\\Sent",)


@dataclass(frozen=True, slots=True)
class Delete:
    mailbox: str


@dataclass(frozen=True, slots=True)
class Rename:
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class Subscribe:
    mailbox: str


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    mailbox: str


@dataclass(frozen=True, slots=True)
class List:
    """LIST / LSUB (``lsub``), RFC 5258 LIST-EXTENDED: ``selection`` upper-cased options
    (SUBSCRIBED, REMOTE, RECURSIVEMATCH, SPECIAL-USE), ``patterns`` one or more,
    ``returns`` upper-cased return options (SUBSCRIBED, CHILDREN, SPECIAL-USE, and
    ``STATUS`` with ``status_items``: RFC 5819 LIST-STATUS)."""

    reference: str
    patterns: tuple[str, ...]
    selection: tuple[str, ...] = ()
    returns: tuple[str, ...] = ()
    status_items: tuple[str, ...] = ()
    lsub: bool = False


@dataclass(frozen=True, slots=True)
class Namespace:
    pass


@dataclass(frozen=True, slots=True)
class Status:
    mailbox: str
    # upper-cased: MESSAGES UIDNEXT UIDVALIDITY UNSEEN DELETED SIZE RECENT HIGHESTMODSEQ
    items: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AppendMessage:
    """One message of an APPEND (several with MULTIAPPEND, RFC 3502). ``data`` is the
    literal's bytes; ``binary`` for a literal8 (``~{n}``, RFC 3516)."""

    data: bytes
    flags: tuple[str, ...] = ()
    date: datetime.datetime | None = None
    binary: bool = False


@dataclass(frozen=True, slots=True)
class Append:
    mailbox: str
    messages: tuple[AppendMessage, ...]


@dataclass(frozen=True, slots=True)
class Idle:
    """IDLE (RFC 2177): the session answers ``+ idling``; the engine then waits for DONE
    and emits :class:`IdleDone`."""


@dataclass(frozen=True, slots=True)
class IdleDone:
    """The line that ends IDLE. ``bad``: it was not ``DONE``; the engine has already
    answered the IDLE's tag ``BAD Expected DONE.`` (as Dovecot does) and the session only
    ends its IDLE, sending nothing."""

    bad: bool = False


@dataclass(frozen=True, slots=True)
class Check:
    pass


@dataclass(frozen=True, slots=True)
class Close:
    pass


@dataclass(frozen=True, slots=True)
class Unselect:
    pass


@dataclass(frozen=True, slots=True)
class Expunge:
    """EXPUNGE, or UID EXPUNGE with ``uids`` (RFC 4315 / RFC 9051)."""

    uids: SequenceSet | None = None


@dataclass(frozen=True, slots=True)
class Search:
    """SEARCH [RETURN (...)] [CHARSET x] keys. ``returns`` upper-cased ESEARCH options
    (MIN MAX ALL COUNT SAVE), None when no RETURN was given (() for ``RETURN ()``).
    ``charset`` upper-cased or None. The top-level keys are ANDed."""

    keys: tuple[SearchKey, ...]
    charset: str | None = None
    returns: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Fetch:
    """FETCH set items [(CHANGEDSINCE n [VANISHED])] (RFC 7162)."""

    sequence: SequenceSet
    items: tuple[FetchItem, ...]
    changedsince: int | None = None
    vanished: bool = False


@dataclass(frozen=True, slots=True)
class Store:
    """STORE set [(UNCHANGEDSINCE n)] [+|-]FLAGS[.SILENT] (flags). ``mode`` is ``"+"``,
    ``"-"`` or ``""`` (replace)."""

    sequence: SequenceSet
    mode: str
    flags: tuple[str, ...]
    silent: bool = False
    unchangedsince: int | None = None


@dataclass(frozen=True, slots=True)
class Copy:
    sequence: SequenceSet
    mailbox: str


@dataclass(frozen=True, slots=True)
class Move:
    sequence: SequenceSet
    mailbox: str


@dataclass(frozen=True, slots=True)
class GetQuota:
    root: str


@dataclass(frozen=True, slots=True)
class GetQuotaRoot:
    mailbox: str


Body = (
    Capability
    | Noop
    | Logout
    | StartTls
    | Login
    | Authenticate
    | Enable
    | Id
    | Compress
    | Select
    | Create
    | Delete
    | Rename
    | Subscribe
    | Unsubscribe
    | List
    | Namespace
    | Status
    | Append
    | Idle
    | Check
    | Close
    | Unselect
    | Expunge
    | Search
    | Fetch
    | Store
    | Copy
    | Move
    | GetQuota
    | GetQuotaRoot
)


@dataclass(frozen=True, slots=True)
class Command:
    """One complete command: ``tag``, ``uid`` (it came as ``UID FETCH`` ...) and ``body``."""

    tag: str
    body: Body
    uid: bool = False
