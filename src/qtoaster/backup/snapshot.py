"""``qtoaster backup``: one snapshot of a home into ``DEST/NAME/`` (docs/backup.md).

The snapshot is built in ``DEST/NAME.partial`` and renamed once its manifest is written:
a snapshot without ``.partial`` is complete. Unchanged files (same path, or the same
Maildir message under a new name, with the same size and mtime) are hard links to the
previous complete snapshot's copies; the others are copied and hashed.

Invariants: the home is only read (the pause handshake aside); the queue and the Maildirs
are copied while no delivery runs (quiesce.py); SQLite databases are copied with SQLite's
online backup; PostgreSQL's with pg_dump.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from qtoaster.backup import files, manifest
from qtoaster.backup.database import BackupError, is_postgresql, pg_dump
from qtoaster.backup.manifest import DATABASE, HOME, Entry, Manifest
from qtoaster.backup.quiesce import deliveries_paused
from qtoaster.core.home import Home

NAME = re.compile(r"^(\d{8}T\d{6}Z)(?:-(\d+))?$")
PARTIAL = ".partial"


@dataclass(slots=True)
class Report:
    name: str
    files: int = 0
    copied: int = 0
    linked: int = 0
    bytes_copied: int = 0
    how: str = ""
    skipped: list[str] = field(default_factory=list)  # links, sockets, FIFOs
    would: list[str] = field(default_factory=list)  # --dry-run: "copy P" / "link P"


def snapshots(dest: Path) -> list[str]:
    """The complete snapshots in ``dest``, oldest first."""
    if not dest.is_dir():
        return []
    found = []
    for entry in dest.iterdir():
        m = NAME.match(entry.name)
        if m and (entry / manifest.FILE).is_file():
            found.append((m.group(1), int(m.group(2) or 0), entry.name))
    return [name for _, _, name in sorted(found)]


def read_manifest(snapshot: Path) -> Manifest:
    try:
        text = (snapshot / manifest.FILE).read_text()
    except OSError as exc:
        raise manifest.DamagedManifest(f"cannot read {manifest.FILE}: {exc.strerror}") from None
    return manifest.loads(text)


class _Base:
    """The previous snapshot's files, by path and by Maildir message identity."""

    def __init__(self, dest: Path, name: str | None, previous: Manifest | None) -> None:
        self.dir = dest / name if name else None
        entries = previous.files() if previous else {}
        self.by_path = entries
        self.by_message: dict[tuple[str, str], Entry] = {}
        for entry in entries.values():
            key = manifest.message_key(entry.path.removeprefix(HOME + "/"))
            if key is not None:
                self.by_message[key] = entry

    def match(self, found: files.Found) -> Entry | None:
        entry = self.by_path.get(f"{HOME}/{found.rel}")
        if entry is None:
            key = manifest.message_key(found.rel)
            entry = self.by_message.get(key) if key else None
        if entry and (entry.size, entry.mtime_ns) == (found.size, found.mtime_ns):
            return entry
        return None


def backup(
    home: Home,
    dest: Path,
    *,
    database_url: str | None,
    credentials_url: str | None,
    dry_run: bool = False,
    pause_timeout: float = 300.0,
    now: datetime | None = None,
) -> Report:
    if not home.settings_file.is_file():
        raise BackupError(f"{home.root}: no qtoaster home here")
    dest = dest.absolute()
    if dest == home.root or home.root in dest.parents:
        raise BackupError(f"{dest}: the backup must not be inside the home it copies")
    when = now or datetime.now(UTC)
    names = snapshots(dest)
    previous_name = names[-1] if names else None
    previous = None
    if previous_name is not None:
        try:
            previous = read_manifest(dest / previous_name)
        except manifest.DamagedManifest:
            previous_name = None  # a full copy then; restore reports the damage
    base = _Base(dest, previous_name, previous)
    name = _new_name(dest, when)
    report = Report(name)
    if dry_run:
        _dry_run(home, base, report)
        return report
    dest.mkdir(parents=True, exist_ok=True)
    for stale in dest.glob("*" + PARTIAL):
        shutil.rmtree(stale)
    work = dest / (name + PARTIAL)
    (work / HOME).mkdir(parents=True)
    result = Manifest(
        name=name,
        home=str(home.root),
        created=when.isoformat(timespec="seconds"),
        previous=previous_name,
        database="postgresql" if is_postgresql(database_url) else "sqlite",
    )
    with deliveries_paused(home, pause_timeout) as how:
        report.how = how
        _copy_home(home.root, work / HOME, base, result, report)
    _dump_databases(work, database_url, credentials_url, result, report)
    result.copied, result.linked = report.copied, report.linked
    (work / manifest.FILE).write_text(manifest.dumps(result))
    os.rename(work, dest / name)
    return report


def _new_name(dest: Path, when: datetime) -> str:
    stem = when.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    name, n = stem, 1
    while (dest / name).exists() or (dest / (name + PARTIAL)).exists():
        n += 1
        name = f"{stem}-{n}"
    return name


def _dry_run(home: Home, base: _Base, report: Report) -> None:
    for found in files.walk(home.root):
        if found.kind == "other":
            report.skipped.append(found.rel)
        elif found.kind == "file":
            report.files += 1
            linked = not manifest.is_sqlite(found.rel) and base.match(found) is not None
            report.linked += linked
            report.copied += not linked
            report.bytes_copied += 0 if linked else found.size
            report.would.append(f"{'link' if linked else 'copy'} {found.rel}")


def _copy_home(root: Path, out: Path, base: _Base, result: Manifest, report: Report) -> None:
    taken: set[str] = set()
    for found in files.walk(root):
        if found.kind == "other":
            report.skipped.append(found.rel)
            continue
        if found.rel in taken:
            continue
        dst = out / found.rel
        if found.kind == "dir":
            dst.mkdir(mode=0o700, exist_ok=True)
            result.entries.append(Entry(f"{HOME}/{found.rel}", "dir", found.mode))
            continue
        entry = _take_file(root, found, dst, base, report)
        if entry is not None:
            taken.add(entry.path.removeprefix(HOME + "/"))
            result.entries.append(entry)
            report.files += 1


def _take_file(
    root: Path, found: files.Found, dst: Path, base: _Base, report: Report
) -> Entry | None:
    path = f"{HOME}/{found.rel}"
    if manifest.is_sqlite(found.rel):
        sha, size = files.sqlite_copy(root / found.rel, dst, found.mode)
        report.copied += 1
        report.bytes_copied += size
        return Entry(path, "file", found.mode, size, found.mtime_ns, sha)
    same = base.match(found)
    if same is not None and base.dir is not None:
        try:
            os.link(base.dir / same.path, dst)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EMLINK, errno.ENOENT, errno.EPERM):
                raise
        else:
            report.linked += 1
            return Entry(path, "file", found.mode, found.size, found.mtime_ns, same.sha256)
    try:
        sha, size = files.copy_hashed(root / found.rel, dst, found.mode)
    except FileNotFoundError:
        moved = files.relocate(root, found.rel)
        if moved is None:
            return None  # deleted meanwhile (a POP3 DELE, an IMAP EXPUNGE)
        return _take_file(
            root, _restat(root, moved, found), root_dst(dst, found.rel, moved), base, report
        )
    report.copied += 1
    report.bytes_copied += size
    return Entry(path, "file", found.mode, size, found.mtime_ns, sha)


def root_dst(dst: Path, old_rel: str, new_rel: str) -> Path:
    """The destination of ``new_rel`` next to ``dst``, the one planned for ``old_rel``."""
    top = Path(str(dst)[: -len(old_rel)])
    return top / new_rel


def _restat(root: Path, rel: str, was: files.Found) -> files.Found:
    st = os.lstat(root / rel)
    return files.Found(rel, "file", was.mode, st.st_size, st.st_mtime_ns)


def _dump_databases(
    work: Path,
    database_url: str | None,
    credentials_url: str | None,
    result: Manifest,
    report: Report,
) -> None:
    dumps = [("directory.pgdump", database_url), ("credentials.pgdump", credentials_url)]
    wanted = [(name, url) for name, url in dumps if url is not None and is_postgresql(url)]
    if not wanted:
        return
    (work / DATABASE).mkdir()
    result.entries.append(Entry(DATABASE, "dir", 0o700))
    for name, url in wanted:
        assert url is not None
        target = work / DATABASE / name
        pg_dump(url, target)
        target.chmod(0o600)
        st = target.stat()
        sha = files.sha256_of(target)
        result.entries.append(Entry(f"{DATABASE}/{name}", "file", 0o600, st.st_size, 0, sha))
        report.copied += 1
        report.files += 1
        report.bytes_copied += st.st_size
