"""The directory's PostgreSQL databases in a backup: pg_dump and pg_restore, and the
rewrite of Maildir paths stored absolute (docs/backup.md).

SQLite databases in the home need nothing here: the walk copies them with SQLite's
online backup (files.sqlite_copy). PostgreSQL's are dumped with pg_dump's custom format
(consistent: one snapshot transaction) and loaded with ``pg_restore --clean --if-exists``.

Invariants: a URL's password never appears in an error; a failed tool is an error naming
the tool and its last line of stderr.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from qtoaster.backup.manifest import relative_maildir
from qtoaster.core.errors import QtoasterError
from qtoaster.core.home import Home
from qtoaster.directory import schema
from qtoaster.directory.engine import make_engine

TIMEOUT = 3600.0


class BackupError(QtoasterError):
    """A backup or a restore cannot go on; ``str()`` says why."""


def is_postgresql(url: str | None) -> bool:
    return url is not None and url.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "postgres")


def libpq_url(url: str) -> str:
    """The URL as libpq reads it: SQLAlchemy's ``postgresql+psycopg://`` without the driver."""
    scheme, sep, rest = url.partition("://")
    return scheme.split("+", 1)[0] + sep + rest


def shown(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL is shown without its content
        return "(database url)"


def pg_dump(url: str, dst: Path) -> None:
    _tool(["pg_dump", "--format=custom", "--no-owner", "--file", str(dst), libpq_url(url)], url)


def pg_restore(url: str, dump: Path) -> None:
    argv = ["pg_restore", "--clean", "--if-exists", "--no-owner", "--no-privileges"]
    _tool([*argv, "--single-transaction", "--dbname", libpq_url(url), str(dump)], url)


def _tool(argv: list[str], url: str) -> None:
    if shutil.which(argv[0]) is None:
        raise BackupError(f"{argv[0]} not found: install PostgreSQL's client programs")
    try:
        done = subprocess.run(argv, capture_output=True, timeout=TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise BackupError(f"{argv[0]} on {shown(url)}: no answer in {TIMEOUT:.0f} s") from None
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines() or ["(no message)"]
        raise BackupError(f"{argv[0]} on {shown(url)} failed: {lines[-1]}")


def rewrite_maildirs(home: Home, url: str | None, old_home: str) -> int:
    """Make every ``users.maildir`` stored as an absolute path below ``old_home`` relative
    (the directory stores them relative to the home; an older or imported row may not).
    The number of rows changed."""
    engine = make_engine(home, url)
    users = schema.users
    changed = 0
    try:
        with engine.begin() as conn:
            for row_id, maildir in conn.execute(select(users.c.id, users.c.maildir)).all():
                rel = relative_maildir(str(maildir), old_home)
                if rel is not None:
                    conn.execute(update(users).where(users.c.id == row_id).values(maildir=rel))
                    changed += 1
    except SQLAlchemyError as exc:
        raise BackupError(f"directory {shown(url or str(home.database))}: {exc}") from None
    finally:
        engine.dispose()
    return changed
