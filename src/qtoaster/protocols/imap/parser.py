"""The IMAP command grammar: a framed command (lexer.RawCommand) to a commands.Command.

Covers RFC 9051 6 and the extensions qtoaster offers (docs/imap-engine.md lists them):
LITERAL+, SASL-IR, ENABLE, ID, COMPRESS, CONDSTORE/QRESYNC, LIST-EXTENDED, LIST-STATUS,
SPECIAL-USE, MULTIAPPEND, BINARY, ESEARCH, SEARCHRES, UIDPLUS, MOVE, QUOTA, UNSELECT.

:func:`parse_command` reads the tag and the command name, asks ``refuse`` whether the
command is allowed now (states.py: the engine's current state), then reads the arguments
with a per-command reader (FETCH items and SEARCH keys: fetchgrammar.py).

Invariants: no I/O; a malformed command raises grammar.ParseError (text for BAD) with the
tag when one was read, :class:`NoTag` otherwise; a command is accepted only when every
byte of it was consumed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from qtoaster.protocols.imap import commands as c
from qtoaster.protocols.imap.fetchgrammar import fetch_items, search_keys
from qtoaster.protocols.imap.grammar import MAX_NUMBER64, Cursor, ParseError
from qtoaster.protocols.imap.lexer import RawCommand

_TAG = re.compile(r'[^\x00-\x20\x7f-\U0010ffff(){%*"\\+]+')  # ASCII, as lexer._TAG
_NAME = re.compile(r"[A-Za-z]+")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")

UNKNOWN_COMMAND: Final = "unknown command"


class NoTag(ParseError):
    """No tag could be read: the answer is untagged ``* BAD``."""


class Refused(ParseError):
    """The command is not allowed in the current state (text from states.py)."""


def parse_command(raw: RawCommand, refuse: Callable[[str], str | None]) -> c.Command:
    """Parse one framed command. ``refuse(name)`` returns the BAD text when the command
    (upper-cased, ``UID FETCH`` for the UID forms) is not allowed now, else None."""
    cur = Cursor(raw)
    tag = cur.match(_TAG)
    if tag is None or not cur.skip(" "):
        raise NoTag("missing or invalid tag")
    try:
        name = cur.match(_NAME)
        if name is None:
            raise ParseError(UNKNOWN_COMMAND)
        name = name.upper()
        uid = name == "UID"
        if uid:
            cur.sp()
            sub = cur.match(_NAME)
            name = "UID " + (sub or "").upper()
            reader = _UID_COMMANDS.get(name)
        else:
            reader = _COMMANDS.get(name)
        if reader is None or (cur.peek() not in ("", " ")):
            raise ParseError(UNKNOWN_COMMAND)
        refusal = refuse(name)
        if refusal is not None:
            raise Refused(refusal)
        body = reader(cur)
        cur.end()
    except ParseError as exc:
        exc.tag = tag
        raise
    return c.Command(tag, body, uid)


# -- command readers ------------------------------------------------------------------------

_Reader = Callable[[Cursor], c.Body]


def _no_args(make: Callable[[], c.Body]) -> _Reader:
    def read(cur: Cursor) -> c.Body:
        return make()

    return read


def _login(cur: Cursor) -> c.Login:
    cur.sp()
    user = cur.astring()
    cur.sp()
    return c.Login(user, cur.astring())


def _authenticate(cur: Cursor) -> c.Authenticate:
    cur.sp()
    mechanism = cur.keyword()
    initial = None
    if cur.skip(" "):
        initial = cur.match(_BASE64)
        if not initial:
            raise ParseError("invalid initial response")
    return c.Authenticate(mechanism, initial)


def _enable(cur: Cursor) -> c.Enable:
    names = []
    while cur.skip(" "):
        names.append(cur.keyword())
    if not names:
        raise ParseError("ENABLE needs a capability")
    return c.Enable(tuple(names))


def _id(cur: Cursor) -> c.Id:
    cur.sp()
    if cur.peek() != "(":
        if cur.keyword() != "NIL":
            raise ParseError("expected ( or NIL")
        return c.Id(None)
    cur.open()
    params: list[tuple[str, str | None]] = []
    if not cur.skip(")"):
        while True:
            field = cur.string()
            cur.sp()
            params.append((field, cur.nstring()))
            if cur.skip(")"):
                break
            cur.sp()
    if len(params) > 30:  # RFC 2971 3.3
        raise ParseError("too many ID fields")
    return c.Id(tuple(params))


def _compress(cur: Cursor) -> c.Compress:
    cur.sp()
    return c.Compress(cur.keyword())


def _select(readonly: bool) -> _Reader:
    def read(cur: Cursor) -> c.Select:
        cur.sp()
        mailbox = cur.astring()
        condstore = False
        qresync = None
        if cur.skip(" "):
            cur.open()
            while True:
                param = cur.keyword()
                if param == "CONDSTORE":
                    condstore = True
                elif param == "QRESYNC":
                    cur.sp()
                    qresync = _qresync(cur)
                else:
                    raise ParseError(f"unknown SELECT parameter {param}")
                if cur.skip(")"):
                    break
                cur.sp()
        return c.Select(mailbox, readonly, condstore, qresync)

    return read


def _qresync(
    cur: Cursor,
) -> tuple[int, int, c.SequenceSet | None, tuple[c.SequenceSet, c.SequenceSet] | None]:
    cur.open()
    uidvalidity = cur.number(nonzero=True)
    cur.sp()
    modseq = cur.number(MAX_NUMBER64, nonzero=True)
    known = None
    match = None
    if cur.skip(" "):
        if cur.peek() != "(":
            known = cur.sequence_set()
            if cur.skip(" "):
                match = _seq_match(cur)
        else:
            match = _seq_match(cur)
    cur.close()
    return uidvalidity, modseq, known, match


def _seq_match(cur: Cursor) -> tuple[c.SequenceSet, c.SequenceSet]:
    cur.open()
    seqs = cur.sequence_set()
    cur.sp()
    uids = cur.sequence_set()
    cur.close()
    return seqs, uids


def _create(cur: Cursor) -> c.Create:
    cur.sp()
    mailbox = cur.astring()
    special: tuple[str, ...] = ()
    if cur.skip(" "):
        cur.open()
        if cur.keyword() != "USE":
            raise ParseError("unknown CREATE parameter")
        cur.sp()
        special = cur.flag_list()
        cur.close()
    return c.Create(mailbox, special)


def _one_mailbox(make: Callable[[str], c.Body]) -> _Reader:
    def read(cur: Cursor) -> c.Body:
        cur.sp()
        return make(cur.astring())

    return read


def _rename(cur: Cursor) -> c.Rename:
    cur.sp()
    old = cur.astring()
    cur.sp()
    return c.Rename(old, cur.astring())


def _list(cur: Cursor) -> c.List:
    cur.sp()
    selection: tuple[str, ...] = ()
    if cur.peek() == "(":
        selection = cur.paren_list()
        cur.sp()
    reference = cur.astring()
    cur.sp()
    if cur.skip("("):
        patterns = [cur.list_mailbox()]
        while cur.skip(" "):
            patterns.append(cur.list_mailbox())
        cur.close()
    else:
        patterns = [cur.list_mailbox()]
    returns: list[str] = []
    status_items: tuple[str, ...] = ()
    if cur.skip(" "):
        if cur.keyword() != "RETURN":
            raise ParseError("expected RETURN")
        cur.sp()
        cur.open()
        if not cur.skip(")"):
            while True:
                option = cur.keyword()
                returns.append(option)
                if option == "STATUS":
                    cur.sp()
                    status_items = cur.paren_list()
                    if not status_items:
                        raise ParseError("STATUS needs items")
                if cur.skip(")"):
                    break
                cur.sp()
    return c.List(reference, tuple(patterns), selection, tuple(returns), status_items)


def _lsub(cur: Cursor) -> c.List:
    cur.sp()
    reference = cur.astring()
    cur.sp()
    return c.List(reference, (cur.list_mailbox(),), lsub=True)


def _status(cur: Cursor) -> c.Status:
    cur.sp()
    mailbox = cur.astring()
    cur.sp()
    items = cur.paren_list()
    if not items:
        raise ParseError("STATUS needs items")
    return c.Status(mailbox, items)


def _append(cur: Cursor) -> c.Append:
    cur.sp()
    mailbox = cur.astring()
    messages = []
    while cur.skip(" "):
        flags: tuple[str, ...] = ()
        if cur.peek() == "(":
            flags = cur.flag_list()
            cur.sp()
        date = cur.date_time()
        if date is not None:
            cur.sp()
        if cur.s[cur.pos : cur.pos + 6].upper() == "UTF8 (":
            # RFC 6855 4: a message with UTF-8 headers, ``UTF8 (~{n}...)``, which a server
            # that offers UTF8=ACCEPT must take; stored as any other message.
            cur.pos += 6
            data, binary = cur.literal()
            cur.close()
        else:
            data, binary = cur.literal()
        messages.append(c.AppendMessage(data, flags, date, binary))
    if not messages:
        raise ParseError("APPEND needs a message")
    return c.Append(mailbox, tuple(messages))


def _uid_expunge(cur: Cursor) -> c.Expunge:
    cur.sp()
    return c.Expunge(cur.sequence_set())


def _search(cur: Cursor) -> c.Search:
    cur.sp()
    returns = None
    charset = None
    if cur.s.startswith(("RETURN ", "return ", "Return "), cur.pos):
        cur.pos += 7
        returns = cur.paren_list()
        for option in returns:
            if option not in ("MIN", "MAX", "ALL", "COUNT", "SAVE"):
                raise ParseError(f"unknown RETURN option {option}")
        cur.sp()
    if cur.s.startswith(("CHARSET ", "charset ", "Charset "), cur.pos):
        cur.pos += 8
        charset = cur.astring().upper()
        cur.sp()
    return c.Search(search_keys(cur), charset, returns)


def _fetch(cur: Cursor) -> c.Fetch:
    cur.sp()
    sequence = cur.sequence_set()
    cur.sp()
    items = fetch_items(cur)
    changedsince = None
    vanished = False
    if cur.skip(" "):
        cur.open()
        while True:
            modifier = cur.keyword()
            if modifier == "CHANGEDSINCE" and changedsince is None:
                cur.sp()
                changedsince = cur.number(MAX_NUMBER64, nonzero=True)
            elif modifier == "VANISHED" and not vanished:
                vanished = True
            else:
                raise ParseError(f"unknown FETCH modifier {modifier}")
            if cur.skip(")"):
                break
            cur.sp()
        if vanished and changedsince is None:
            raise ParseError("VANISHED needs CHANGEDSINCE")
    return c.Fetch(sequence, items, changedsince, vanished)


def _uid_fetch(cur: Cursor) -> c.Fetch:
    return _fetch(cur)


def _plain_fetch(cur: Cursor) -> c.Fetch:
    fetch = _fetch(cur)
    if fetch.vanished:  # RFC 7162 3.2.6: VANISHED only with UID FETCH
        raise ParseError("VANISHED is only allowed with UID FETCH")
    return fetch


_STORE_ITEM = re.compile(r"([+-]?)FLAGS(\.SILENT)?", re.IGNORECASE)


def _store(cur: Cursor) -> c.Store:
    cur.sp()
    sequence = cur.sequence_set()
    cur.sp()
    unchangedsince = None
    if cur.skip("("):
        if cur.keyword() != "UNCHANGEDSINCE":
            raise ParseError("unknown STORE modifier")
        cur.sp()
        unchangedsince = cur.number(MAX_NUMBER64)
        cur.close()
        cur.sp()
    m = _STORE_ITEM.match(cur.s, cur.pos)
    if m is None:
        raise ParseError("expected FLAGS, +FLAGS or -FLAGS")
    cur.pos = m.end()
    cur.sp()
    if cur.peek() == "(":
        flags = cur.flag_list()
    else:
        items = [cur.flag()]
        while cur.skip(" "):
            items.append(cur.flag())
        flags = tuple(items)
    return c.Store(sequence, m.group(1), flags, bool(m.group(2)), unchangedsince)


def _copy_move(make: Callable[[c.SequenceSet, str], c.Body]) -> _Reader:
    def read(cur: Cursor) -> c.Body:
        cur.sp()
        sequence = cur.sequence_set()
        cur.sp()
        return make(sequence, cur.astring())

    return read


def _getquota(cur: Cursor) -> c.GetQuota:
    cur.sp()
    return c.GetQuota(cur.astring())


_COMMANDS: dict[str, _Reader] = {
    "CAPABILITY": _no_args(c.Capability),
    "NOOP": _no_args(c.Noop),
    "LOGOUT": _no_args(c.Logout),
    "STARTTLS": _no_args(c.StartTls),
    "LOGIN": _login,
    "AUTHENTICATE": _authenticate,
    "ENABLE": _enable,
    "ID": _id,
    "COMPRESS": _compress,
    "SELECT": _select(False),
    "EXAMINE": _select(True),
    "CREATE": _create,
    "DELETE": _one_mailbox(c.Delete),
    "RENAME": _rename,
    "SUBSCRIBE": _one_mailbox(c.Subscribe),
    "UNSUBSCRIBE": _one_mailbox(c.Unsubscribe),
    "LIST": _list,
    "LSUB": _lsub,
    "NAMESPACE": _no_args(c.Namespace),
    "STATUS": _status,
    "APPEND": _append,
    "IDLE": _no_args(c.Idle),
    "CHECK": _no_args(c.Check),
    "CLOSE": _no_args(c.Close),
    "UNSELECT": _no_args(c.Unselect),
    "EXPUNGE": _no_args(c.Expunge),
    "SEARCH": _search,
    "FETCH": _plain_fetch,
    "STORE": _store,
    "COPY": _copy_move(c.Copy),
    "MOVE": _copy_move(c.Move),
    "GETQUOTA": _getquota,
    "GETQUOTAROOT": _one_mailbox(c.GetQuotaRoot),
}

_UID_COMMANDS: dict[str, _Reader] = {
    "UID COPY": _copy_move(c.Copy),
    "UID MOVE": _copy_move(c.Move),
    "UID FETCH": _uid_fetch,
    "UID SEARCH": _search,
    "UID STORE": _store,
    "UID EXPUNGE": _uid_expunge,
}

COMMAND_NAMES: Final = frozenset(_COMMANDS) | frozenset(_UID_COMMANDS)
