"""Shared helpers of the IMAP store tests: a LocalFs over a fresh Maildir."""

from __future__ import annotations

from pathlib import Path

from qtoaster.maildir.create import make_maildir
from qtoaster.maildir.fs import LocalFs
from qtoaster.maildir.quota import Quota
from qtoaster.maildir.store import MaildirStore


def new_store(tmp_path: Path, quota: Quota | None = None) -> tuple[MaildirStore, Path]:
    root = tmp_path / "dom" / "user" / "Maildir"
    make_maildir(root)
    return MaildirStore(LocalFs(root, hostname="test.example", quota=quota)), root


def drop(root: Path, name: str, data: bytes, sub: str = "new") -> Path:
    path = root / sub / name
    path.write_bytes(data)
    return path
