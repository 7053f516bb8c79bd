"""Maildir++ folders as Dovecot and Courier lay them out, and the small per-mailbox files
of the IMAP store: subscriptions, SPECIAL-USE, "prepared".

Names: ``INBOX`` (any case) is the Maildir itself; any other IMAP name ``a.b`` is the
directory ``.a.b`` (delimiter ``.``), written in UTF-8 as Dovecot's ``LAYOUT=maildir++``
with ``UTF-8`` does.  A folder is a directory holding ``cur/``; the store creates it with
``cur/ new/ tmp/`` and the empty ``maildirfolder`` file (Courier/maildrop's mark, which
maildir/quota.py uses to charge the folder to the parent's ``maildirsize``).

Files in the Maildir root:
- ``subscriptions``: Dovecot's format, one name per line (Dovecot's version 2 header
  ``V\\t2`` with tab-separated hierarchy is read too); Courier's ``courierimapsubscribed``
  (names with the ``INBOX.`` prefix) is read when ours is missing;
- ``qtoaster-special-use``: ``<name>\\t<flag> ...`` per line; when missing, the usual names
  (Sent, Drafts, Trash, Junk, Archive) carry their flag;
- ``qtoaster-imap-state``: ``prepared`` once the special folders were created, so a folder
  the user deleted is not brought back.

Invariant: :func:`folder_dir` refuses (StoreError CANNOT) every name that is not one path
element below the Maildir: empty levels, ``/``, NUL, CR/LF, a level starting with ``.``
or equal to ``..`` cannot reach a file outside the folder tree.
"""

from __future__ import annotations

from qtoaster.maildir.storeapi import MailFs, StoreError

DELIMITER = "."
SUBSCRIPTIONS = "subscriptions"
COURIER_SUBSCRIPTIONS = "courierimapsubscribed"
SPECIAL_USE_FILE = "qtoaster-special-use"
STATE_FILE = "qtoaster-imap-state"
FOLDER_MARK = "maildirfolder"
SPECIAL = {
    "Sent": "\\Sent",
    "Drafts": "\\Drafts",
    "Trash": "\\Trash",
    "Junk": "\\Junk",
    "Archive": "\\Archive",
}
SPECIAL_USE_FLAGS = frozenset({*SPECIAL.values(), "\\All", "\\Flagged"})
_SMALL = 1 << 20
_MAX_NAME = 1000


def is_inbox(name: str) -> bool:
    return name.upper() == "INBOX"


def normalize(name: str) -> str:
    """``inbox`` and friends become ``INBOX``; other names are case-sensitive."""
    return "INBOX" if is_inbox(name) else name


def folder_dir(name: str) -> str:
    """The directory of ``name`` relative to the Maildir: ``""`` for INBOX, ``.a.b``."""
    if is_inbox(name):
        return ""
    if not name or len(name.encode("utf-8", "surrogateescape")) > _MAX_NAME:
        raise StoreError("CANNOT", "invalid folder name")
    for level in name.split(DELIMITER):
        if not level or level.startswith(".") or any(c in level for c in "/\0\r\n\\"):
            raise StoreError("CANNOT", "invalid folder name")
    return f".{name}"


def dir_name(entry: str) -> str | None:
    """The IMAP name of a root entry ``.a.b``, None for what is not a folder name."""
    if not entry.startswith(".") or entry in (".", ".."):
        return None
    name = entry[1:]
    try:
        folder_dir(name)
    except StoreError:
        return None
    return None if is_inbox(name) else name


def folder_names(fs: MailFs) -> list[str]:
    """Every folder (directory with cur/) below the Maildir, INBOX first, then sorted."""
    found = ["INBOX"]
    for entry in sorted(fs.listdir("")):
        name = dir_name(entry)
        if name is None:
            continue
        try:
            fs.stat(f"{entry}/cur")
        except OSError:
            continue
        found.append(name)
    return found


def make_folder(fs: MailFs, name: str) -> None:
    """Create ``name``'s directory with cur/ new/ tmp/ and ``maildirfolder`` (what is
    there already is kept)."""
    base = folder_dir(name)
    for rel in (base, f"{base}/cur", f"{base}/new", f"{base}/tmp"):
        try:
            fs.mkdir(rel)
        except FileExistsError:
            pass  # half made (a crash, or delivery's .Junk): complete it
    if fs.read_file(f"{base}/{FOLDER_MARK}", 1) is None:
        fs.write_atomic(f"{base}/{FOLDER_MARK}", b"")


def _lines(data: bytes | None) -> list[str]:
    if data is None:
        return []
    text = data.decode("utf-8", "surrogateescape")
    return [line.rstrip("\r") for line in text.split("\n")]


def read_subscriptions(fs: MailFs) -> set[str]:
    data = fs.read_file(SUBSCRIPTIONS, _SMALL)
    if data is not None:
        lines = _lines(data)
        if lines and lines[0] == "V\t2":
            return {line.replace("\t", DELIMITER) for line in lines[1:] if line}
        return {normalize(line) for line in lines if line}
    courier = _lines(fs.read_file(COURIER_SUBSCRIPTIONS, _SMALL))
    found = set()
    for line in courier:
        if line.upper().startswith("INBOX."):
            found.add(line[6:])
        elif line:
            found.add(normalize(line))
    return found


def write_subscriptions(fs: MailFs, names: set[str]) -> None:
    body = "".join(f"{name}\n" for name in sorted(names))
    fs.write_atomic(SUBSCRIPTIONS, body.encode("utf-8", "surrogateescape"))


def read_special_use(fs: MailFs) -> dict[str, tuple[str, ...]]:
    data = fs.read_file(SPECIAL_USE_FILE, _SMALL)
    if data is None:
        return {name: (flag,) for name, flag in SPECIAL.items()}
    found: dict[str, tuple[str, ...]] = {}
    for line in _lines(data):
        name, _, flags = line.partition("\t")
        uses = tuple(flag for flag in flags.split() if flag in SPECIAL_USE_FLAGS)
        if name and uses:
            found[name] = uses
    return found


def write_special_use(fs: MailFs, table: dict[str, tuple[str, ...]]) -> None:
    body = "".join(f"{name}\t{' '.join(uses)}\n" for name, uses in sorted(table.items()) if uses)
    fs.write_atomic(SPECIAL_USE_FILE, body.encode("utf-8", "surrogateescape"))


def is_prepared(fs: MailFs) -> bool:
    data = fs.read_file(STATE_FILE, _SMALL)
    return data is not None and b"prepared" in data.split()


def mark_prepared(fs: MailFs) -> None:
    fs.write_atomic(STATE_FILE, b"prepared\n")
