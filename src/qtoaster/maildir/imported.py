"""Parsers for the UID lists and keyword files that Dovecot and Courier leave in a Maildir,
read once when the IMAP store first opens a folder that has no state of ours (migration:
the folder keeps its UIDVALIDITY, UIDs and keywords, so clients need not resync).

Formats (Dovecot's src/lib-storage/index/maildir/maildir-uidlist.c, doc "Maildir mailbox
format"; Courier's imapscanclient):
- ``dovecot-uidlist`` version 3: header ``3 V<uidvalidity> N<nextuid> G<guid> ...``, then
  one ``<uid> [<key><value> ...] :<filename>`` per message; version 1 (also Courier's
  ``courierimapuiddb``): header ``1 <uidvalidity> <nextuid>``, entries ``<uid> <filename>``;
  version 2 has a flags field after the uid.
- ``dovecot-keywords``: ``<index> <name>`` per line; index 0 is the info letter ``a``.
- Courier's ``courierimapkeywords/:list``: keyword names one per line, an empty line, then
  ``<filename>:<index> <index>...`` per message.

Invariant: pure functions over bytes; any input gives a result (unreadable lines are
skipped, an unreadable header gives None), never an exception.  Filenames are reduced to
their base (the part before ``:``), the key the store matches files by.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from qtoaster.maildir import names

_MAX_UID = 2**32 - 1


@dataclass(frozen=True, slots=True)
class Imported:
    uidvalidity: int
    nextuid: int
    uids: dict[str, int] = field(default_factory=dict)  # base name -> uid


def _number(text: bytes) -> int | None:
    if not text.isdigit() or len(text) > 10:
        return None
    value = int(text)
    return value if 0 < value <= _MAX_UID else None


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _finish(uidvalidity: int, nextuid: int, uids: dict[str, int]) -> Imported:
    top = max(uids.values(), default=0)
    return Imported(uidvalidity, min(max(nextuid, top + 1), _MAX_UID), uids)


def read_dovecot_uidlist(data: bytes) -> Imported | None:
    """``dovecot-uidlist`` (versions 1, 2, 3); None when the header is unreadable."""
    lines = data.split(b"\n")
    header = lines[0].split()
    if not header:
        return None
    version = header[0]
    uidvalidity = nextuid = None
    if version == b"3":
        for item in header[1:]:
            if item[:1] == b"V":
                uidvalidity = _number(item[1:])
            elif item[:1] == b"N":
                nextuid = _number(item[1:])
    elif version in (b"1", b"2") and len(header) >= 3:
        uidvalidity, nextuid = _number(header[1]), _number(header[2])
    if uidvalidity is None:
        return None
    uids: dict[str, int] = {}
    for line in lines[1:]:
        uid_text, _, rest = line.partition(b" ")
        uid = _number(uid_text)
        if uid is None:
            continue
        if version == b"3":
            _, colon, filename = rest.partition(b":")
            if not colon:
                continue
        elif version == b"2":
            filename = rest.partition(b" ")[2]
        else:
            filename = rest
        filename = filename.strip(b"\r")
        if filename and b"/" not in filename:
            uids[names.unique(_decode(filename))] = uid
    return _finish(uidvalidity, nextuid or 1, uids)


def read_courier_uidlist(data: bytes) -> Imported | None:
    """Courier's ``courierimapuiddb`` (``1 <uidvalidity> <nextuid>``, ``<uid> <filename>``);
    None when the header is unreadable."""
    lines = data.split(b"\n")
    header = lines[0].split()
    if len(header) < 3 or header[0] not in (b"1", b"2"):
        return None
    uidvalidity, nextuid = _number(header[1]), _number(header[2])
    if uidvalidity is None:
        return None
    uids: dict[str, int] = {}
    for line in lines[1:]:
        first, _, second = line.strip(b"\r").partition(b" ")
        uid, filename = _number(first), second
        if uid is None:  # some Courier versions write "<filename> <uid>"
            uid, filename = _number(second), first
        if uid is not None and filename and b"/" not in filename and b" " not in filename:
            uids[names.unique(_decode(filename))] = uid
    return _finish(uidvalidity, nextuid or 1, uids)


def read_dovecot_keywords(data: bytes) -> dict[int, str]:
    """``dovecot-keywords``: index (0 = ``a``) -> keyword name; indexes 0..25 only."""
    found: dict[int, str] = {}
    for line in data.split(b"\n"):
        index, _, name = line.strip(b"\r").partition(b" ")
        if index.isdigit() and len(index) <= 2 and int(index) < 26 and name.strip():
            found[int(index)] = _decode(name.strip())
    return found


def read_courier_keywords(data: bytes) -> dict[str, tuple[str, ...]]:
    """Courier's ``courierimapkeywords/:list``: base name -> keywords."""
    head, _, body = data.partition(b"\n\n")
    table = [_decode(line.strip(b"\r")) for line in head.split(b"\n")]
    result: dict[str, tuple[str, ...]] = {}
    for line in body.split(b"\n"):
        filename, colon, indexes = line.strip(b"\r").rpartition(b":")
        if not colon or not filename:
            continue
        words = []
        for item in indexes.split():
            if item.isdigit() and len(item) < 7 and int(item) < len(table) and table[int(item)]:
                words.append(table[int(item)])
        if words:
            result[names.unique(_decode(filename))] = tuple(words)
    return result
