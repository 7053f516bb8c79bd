"""``qtoaster restore``: a snapshot back into a home, here or on a new machine
(docs/backup.md).

Steps: choose the snapshot (the latest complete one, or the one named); verify every
file of its manifest (size and SHA-256: a damaged snapshot is refused before anything is
written); plan the changes to the home (manifest.plan); then write them, load the
PostgreSQL dumps, move paths that named the old home below the new one (qtoaster.toml,
``.qmail`` files, absolute Maildir paths in the directory) and recreate what a backup
leaves out (the queue's trigger FIFO). Owners and modes of the roles are the CLI's last
step (supervisor/ownership.py, as ``init`` does).

Invariants: nothing is written before the verification passed, nor at all with
``dry_run``; a file is replaced by rename of a complete, re-hashed copy; a home on which
a server runs is refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from qtoaster.backup import files, manifest
from qtoaster.backup.database import (
    BackupError,
    is_postgresql,
    pg_restore,
    rewrite_maildirs,
    shown,
)
from qtoaster.backup.manifest import DATABASE, HOME, Change, Entry, Manifest
from qtoaster.backup.snapshot import read_manifest, snapshots
from qtoaster.config.settings import load_settings
from qtoaster.core.errors import ConfigError
from qtoaster.core.home import Home
from qtoaster.core.lock import QUEUE_MANAGER, SUPERVISOR, HomeLock
from qtoaster.queue.store import QueueStore


class DamagedBackup(BackupError):
    """The snapshot does not hold what its manifest says."""


@dataclass(slots=True)
class Outcome:
    snapshot: Path
    manifest: Manifest
    changes: list[Change] = field(default_factory=list)
    rewrites: list[str] = field(default_factory=list)  # files whose old home paths move
    database: list[str] = field(default_factory=list)  # what is loaded where
    maildirs: int = 0  # directory rows whose absolute Maildir path was made relative


def choose(src: Path, name: str | None) -> Path:
    """The snapshot to restore: ``name``, else the latest complete one; ``src`` may also be
    a snapshot directory itself."""
    src = src.absolute()
    if (src / manifest.FILE).is_file() and name is None:
        return src
    found = snapshots(src)
    if name is not None:
        if name not in found:
            raise BackupError(f"{src}: no complete snapshot {name!r} (have: {', '.join(found)})")
        return src / name
    if not found:
        raise BackupError(f"{src}: no complete snapshot here (a qtoaster backup DEST)")
    return src / found[-1]


def verify(snapshot: Path, man: Manifest) -> list[str]:
    """Every problem of the snapshot against its manifest (empty: intact)."""
    problems = []
    for entry in man.entries:
        path = snapshot / entry.path
        if entry.kind == "dir":
            if not path.is_dir():
                problems.append(f"{entry.path}: directory missing")
            continue
        try:
            size = path.stat().st_size
        except OSError:
            problems.append(f"{entry.path}: missing")
            continue
        if size != entry.size:
            problems.append(f"{entry.path}: {size} bytes, the manifest says {entry.size}")
        elif files.sha256_of(path) != entry.sha256:
            problems.append(f"{entry.path}: checksum differs from the manifest")
    return problems


def restore(src: Path, home: Home, *, name: str | None = None, dry_run: bool = False) -> Outcome:
    snapshot = choose(src, name)
    try:
        man = read_manifest(snapshot)
    except manifest.DamagedManifest as exc:
        raise DamagedBackup(f"backup {snapshot} is damaged: {exc}") from None
    problems = verify(snapshot, man)
    if problems:
        shown_problems = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise DamagedBackup(
            f"backup {snapshot} is damaged ({len(problems)} problems), not restored:\n"
            f"  {shown_problems}{more}"
        )
    _refuse_running(home)
    wanted = [e for e in man.entries if e.path.startswith(HOME + "/")]
    present = _present(home.root, man.files())
    out = Outcome(snapshot, man, manifest.plan(wanted, present))
    if not dry_run:
        _apply(snapshot, home.root, wanted, out.changes)
    out.rewrites = _rewrite_files(home.root, snapshot, man, dry_run)
    out.database = _databases(snapshot, home, man, dry_run)
    if not dry_run:
        settings = load_settings(home.settings_file)
        out.maildirs = rewrite_maildirs(home, settings.database_url, man.home)
        QueueStore.create(home.queue)
    return out


def _refuse_running(home: Home) -> None:
    if not home.run_dir.is_dir():
        return
    for lock, what in ((SUPERVISOR, "qtoaster run"), (QUEUE_MANAGER, "the queue manager")):
        if (home.run_dir / lock).exists():
            pid = HomeLock(home.run_dir, lock).held_elsewhere()
            if pid is not None:
                by = f" (pid {pid})" if pid else ""
                raise BackupError(f"{what} runs on {home.root}{by}: stop it before a restore")


def _present(root: Path, wanted: dict[str, Entry]) -> dict[str, str]:
    """The home's files a backup would take: path -> SHA-256 (a size that differs from
    the snapshot's needs no hash to differ)."""
    if not root.is_dir():
        return {}
    present = {}
    for found in files.walk(root):
        if found.kind != "file":
            continue
        entry = wanted.get(f"{HOME}/{found.rel}")
        if entry is None or entry.size != found.size:
            present[found.rel] = f"size {found.size}"
        else:
            present[found.rel] = files.sha256_of(root / found.rel)
    return present


def _apply(snapshot: Path, root: Path, wanted: list[Entry], changes: list[Change]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for entry in wanted:
        if entry.kind == "dir":
            path = root / entry.path.removeprefix(HOME + "/")
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(entry.mode)
    by_path = {e.path: e for e in wanted}
    for change in changes:
        target = root / change.path
        if change.action == "remove":
            target.unlink(missing_ok=True)
            continue
        entry = by_path[f"{HOME}/{change.path}"]
        tmp = target.with_name(f".restore.{os.getpid()}.{target.name}")
        tmp.unlink(missing_ok=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        sha, _ = files.copy_hashed(snapshot / entry.path, tmp, entry.mode)
        if sha != entry.sha256:
            tmp.unlink()
            raise DamagedBackup(f"{entry.path}: changed while it was restored")
        os.replace(tmp, target)


def _rewrite_files(root: Path, snapshot: Path, man: Manifest, dry_run: bool) -> list[str]:
    """qtoaster.toml and ``.qmail`` files that name the old home; rewritten unless dry."""
    new = str(root)
    if man.home == new:
        return []
    names = [
        e.path.removeprefix(HOME + "/")
        for e in man.entries
        if e.kind == "file"
        and (e.path == f"{HOME}/qtoaster.toml" or Path(e.path).name.startswith(".qmail"))
    ]
    rewritten = []
    for rel in names:
        source = snapshot / HOME / rel if dry_run else root / rel
        try:
            text = source.read_text()
        except (OSError, UnicodeDecodeError):
            continue
        moved = manifest.rewrite_home(text, man.home, new)
        if moved != text:
            rewritten.append(rel)
            if not dry_run:
                _replace_text(root / rel, moved)
    return rewritten


def _replace_text(path: Path, text: str) -> None:
    mode = path.stat().st_mode & 0o7777
    tmp = path.with_name(f".restore.{os.getpid()}.{path.name}")
    tmp.write_text(text)
    tmp.chmod(mode)
    os.replace(tmp, path)


def _databases(snapshot: Path, home: Home, man: Manifest, dry_run: bool) -> list[str]:
    """Load the PostgreSQL dumps into the databases the restored settings name."""
    dumps = {e.path: e for e in man.entries if e.path.startswith(DATABASE + "/")}
    if not dumps:
        return []
    settings_file = home.settings_file if not dry_run else snapshot / HOME / "qtoaster.toml"
    try:
        settings = load_settings(settings_file)
    except ConfigError as exc:
        raise BackupError("; ".join(exc.problems)) from None
    targets = {
        f"{DATABASE}/directory.pgdump": settings.database_url,
        f"{DATABASE}/credentials.pgdump": settings.credentials_url,
    }
    done = []
    for path in sorted(dumps):
        url = targets.get(path)
        if url is None or not is_postgresql(url):
            raise BackupError(
                f"{path}: the settings name no PostgreSQL database to load it into"
                " ([database] url / credentials_url in qtoaster.toml)"
            )
        if not dry_run:
            pg_restore(url, snapshot / path)
        done.append(f"{path} -> {shown(url)}")
    return done
