"""The manifest of a snapshot, what a backup takes from a home, and restore's plan.

Pure: no function here touches the disk; the walkers hand in what they found.

A snapshot is ``DEST/NAME/`` with ``manifest.json`` and the copies under ``home/`` (paths
relative to the home) and ``database/`` (PostgreSQL dumps). Every file of the snapshot is
an :class:`Entry` with its size and SHA-256, every directory an entry of kind ``dir``
(an empty Maildir's ``new/`` must come back too).

Invariants: a manifest lists each path once; paths are relative, use ``/`` and never hold
``..`` or start with ``/`` (:func:`loads` refuses one that does, so a damaged or forged
manifest cannot make restore write outside the new home).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath

from qtoaster.core.errors import FormatError

FORMAT = "qtoaster-backup 1"
FILE = "manifest.json"
HOME = "home"  # the snapshot's copy of the home
DATABASE = "database"  # the snapshot's PostgreSQL dumps

# Never copied: sockets, locks and caches of a running server, half-written files, the
# pause handshake, SQLite's side files (the database itself is copied whole, consistently).
_SKIPPED_TOP = frozenset({"run"})
_SKIPPED_QUEUE = frozenset({"trigger", "paused", "paused.tmp"})
_SQLITE_SIDE = ("-journal", "-wal", "-shm")


class DamagedManifest(FormatError, ValueError):
    """The manifest cannot be read or is not one this version writes."""


@dataclass(frozen=True, slots=True)
class Entry:
    path: str  # relative to the snapshot, e.g. "home/control/me"
    kind: str  # "file" or "dir"
    mode: int  # permission bits
    size: int = 0
    mtime_ns: int = 0
    sha256: str = ""


@dataclass(slots=True)
class Manifest:
    name: str
    home: str  # the home's absolute path when it was backed up
    created: str  # ISO 8601 with offset
    previous: str | None  # the snapshot files were hard-linked from
    database: str  # "sqlite" or "postgresql"
    entries: list[Entry] = field(default_factory=list)
    copied: int = 0
    linked: int = 0

    def files(self) -> dict[str, Entry]:
        return {e.path: e for e in self.entries if e.kind == "file"}


def dumps(manifest: Manifest) -> str:
    body = asdict(manifest)
    body["format"] = FORMAT
    return json.dumps(body, indent=1, sort_keys=True) + "\n"


def loads(text: str) -> Manifest:
    try:
        body = json.loads(text)
        if body.pop("format") != FORMAT:
            raise DamagedManifest(f"not a {FORMAT!r} manifest")
        entries = [Entry(**raw) for raw in body.pop("entries")]
        manifest = Manifest(**body, entries=entries)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise DamagedManifest(f"unreadable manifest: {exc}") from None
    seen: set[str] = set()
    for entry in manifest.entries:
        if not safe_path(entry.path) or entry.path in seen:
            raise DamagedManifest(f"bad path in manifest: {entry.path!r}")
        seen.add(entry.path)
    return manifest


def safe_path(path: str) -> bool:
    parts = path.split("/")
    return bool(path) and "" not in parts and ".." not in parts and "." not in parts


def included(rel: str) -> bool:
    """Whether a backup takes ``rel`` (a path relative to the home)."""
    parts = PurePosixPath(rel).parts
    if not parts or parts[0] in _SKIPPED_TOP:
        return False
    if rel.endswith(_SQLITE_SIDE):
        return False
    if parts[0] == "queue" and len(parts) >= 2:
        if len(parts) == 2 and parts[1] in _SKIPPED_QUEUE:
            return False
        if parts[1] == "tmp" and len(parts) > 2:  # messages being written
            return False
    # A Maildir's tmp/ is kept, its files (deliveries in progress) are not.
    return not (parts[0] == "domains" and "tmp" in parts[:-1])


def is_sqlite(rel: str) -> bool:
    """A SQLite database, copied with SQLite's online backup, never byte by byte."""
    return rel.endswith(".sqlite3")


def message_key(rel: str) -> tuple[str, str] | None:
    """A Maildir message's identity across renames: (its Maildir folder, the unique part
    of its name). A flag change renames ``cur/U:2,`` to ``cur/U:2,S``; delivery's
    ``new/U`` becomes ``cur/U:2,`` when read. The content never changes (Maildir)."""
    parts = PurePosixPath(rel).parts
    if len(parts) < 3 or parts[0] != "domains" or parts[-2] not in ("new", "cur"):
        return None
    return "/".join(parts[:-2]), parts[-1].split(":", 1)[0]


@dataclass(frozen=True, slots=True)
class Change:
    action: str  # "add", "replace", "remove"
    path: str  # relative to the home


def plan(wanted: Iterable[Entry], present: Mapping[str, str]) -> list[Change]:
    """What restore changes in a home: ``wanted`` are the snapshot's ``home/`` entries,
    ``present`` the home's files (relative path -> SHA-256) that a backup would take.
    Directories are only ever added (a directory left over is harmless; a file is not)."""
    changes: list[Change] = []
    files: set[str] = set()
    for entry in wanted:
        rel = entry.path.removeprefix(HOME + "/")
        if entry.kind != "file":
            continue
        files.add(rel)
        have = present.get(rel)
        if have is None:
            changes.append(Change("add", rel))
        elif have != entry.sha256:
            changes.append(Change("replace", rel))
    changes += [Change("remove", rel) for rel in sorted(present) if rel not in files]
    return changes


def rewrite_home(text: str, old: str, new: str) -> str:
    """``text`` with each path below (or equal to) the old home moved below the new one.

    Only whole path prefixes: ``/srv/qt`` is rewritten in ``/srv/qt/domains`` and
    ``"/srv/qt"``, not in ``/srv/qt2``."""
    if old == new or not old:
        return text
    out: list[str] = []
    start = 0
    while (found := text.find(old, start)) != -1:
        end = found + len(old)
        following = text[end : end + 1]
        if following in ("", "/", '"', "'", "\n", " ", "\t"):
            out.append(text[start:found] + new)
        else:
            out.append(text[start:end])
        start = end
    out.append(text[start:])
    return "".join(out)


def relative_maildir(value: str, old_home: str) -> str | None:
    """A directory's ``users.maildir`` made relative to the home if it is an absolute
    path below the old one (None: leave it as it is)."""
    old = old_home.rstrip("/") + "/"
    if value.startswith(old):
        return value[len(old) :]
    return None
