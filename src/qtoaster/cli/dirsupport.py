"""What the directory commands share: opening the directory with CLI-friendly errors,
reading passwords, sizes and flags as people write them, removing mail safely.

Invariants: every failure the user can cause ends with one line on stderr and exit
status 1 (click.ClickException); nothing outside ``HOME/domains/`` is ever removed.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from qtoaster.core.errors import QtoasterError
from qtoaster.core.home import Home
from qtoaster.directory.schema import UserFlag
from qtoaster.directory.store import (
    Directory,
)
from qtoaster.maildir.quota import Quota, QuotaSyntaxError, parse_quota

# Short names of the user flags, in the order `user list` and `user show` print them.
FLAG_NAMES = (
    (UserFlag.NO_POP, "nopop"),
    (UserFlag.NO_IMAP, "noimap"),
    (UserFlag.NO_SMTP_AUTH, "noauth"),
    (UserFlag.NO_RELAY, "norelay"),
    (UserFlag.DISABLED, "disabled"),
    (UserFlag.BOUNCE_MAIL, "bounce"),
)
UNITS = (("G", 1024**3), ("M", 1024**2), ("K", 1024))


def database_url(home: Home) -> str | None:
    """``[database] url`` of qtoaster.toml; None (SQLite in the home) without the file."""
    if not home.settings_file.exists():
        return None
    from qtoaster.config.settings import load_settings  # only when there are settings

    return load_settings(home.settings_file).database_url


def credentials_url(home: Home) -> str | None:
    """``[database] credentials_url`` of qtoaster.toml (None: the default store)."""
    if not home.settings_file.exists():
        return None
    from qtoaster.config.settings import load_settings

    return load_settings(home.settings_file).credentials_url


@contextmanager
def open_directory(home: Home) -> Iterator[Directory]:
    """The open directory; its errors become one clear line and exit status 1."""
    try:
        directory = Directory.open(home, database_url(home), credentials_url=credentials_url(home))
    except QtoasterError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        yield directory
    except (QtoasterError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        directory.close()


def remove_mail(home: Home, directory: Path) -> None:
    """Remove ``directory`` (a domain's or a user's) if it is under HOME/domains/."""
    domains = home.domains.resolve()
    target = directory.resolve()
    if domains not in target.parents:
        raise click.ClickException(f"refusing to remove {target}: not under {domains}")
    if target.exists():
        shutil.rmtree(target)


def parse_user_quota(text: str) -> Quota:
    """A vpopmail quota string (spec 21.4); a bad one is a one-line error (exit 1)."""
    try:
        return parse_quota(text)
    except QuotaSyntaxError as exc:
        raise click.ClickException(f"invalid {exc}") from exc


def parse_domain_quota(text: str) -> int | None:
    quota = parse_user_quota(text)
    if quota.messages is not None:
        raise click.ClickException(f"a domain's default quota is a size only: {text!r}")
    return quota.bytes


def size_text(size: int) -> str:
    """``50M (52428800 bytes)``: the largest exact 1024-power unit, and the bytes."""
    for unit, factor in UNITS:
        if size and size % factor == 0:
            return f"{size // factor}{unit} ({size} bytes)"
    return f"{size} bytes"


def quota_text(size: int | None, messages: int | None) -> str:
    if size is None and messages is None:
        return "NOQUOTA (unlimited)"
    parts = [] if size is None else [size_text(size)]
    return ", ".join(parts + ([] if messages is None else [f"{messages} messages"]))


def flags_text(flags: UserFlag) -> str:
    """``-`` or the comma-separated short names (``nopop,noauth``)."""
    return ",".join(name for flag, name in FLAG_NAMES if flags & flag) or "-"


def when_text(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def show_rows(rows: Iterable[tuple[str, object]]) -> None:
    for label, value in rows:
        click.echo(f"{label + ':':<16}{value}")


def read_password(password: str | None, password_stdin: bool) -> str | None:
    """The password of --password or stdin's first line; None if neither was given."""
    if password is not None and password_stdin:
        raise click.ClickException("give --password or --password-stdin, not both")
    if password_stdin:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    if password == "":
        raise click.ClickException("the password is empty")
    return password


def unknown_action(
    catchall: str | None, bounce: bool, delete: bool, *, required: bool = False
) -> str | None:
    """One of a catch-all address, ``bounce`` or ``delete``; usage error if several."""
    given = [a for a in (catchall, "bounce" if bounce else None, "delete" if delete else None) if a]
    if len(given) > 1:
        raise click.UsageError("give one of a catch-all address, --bounce or --delete")
    if required and not given:
        raise click.UsageError("give a catch-all address, --bounce or --delete")
    return given[0] if given else None


# -- domain -----------------------------------------------------------------------------
