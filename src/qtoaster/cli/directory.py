"""``qtoaster domain`` and ``qtoaster user``: vpopmail's vadddomain/vdeldomain/vadduser/vdeluser.

Thin commands over :class:`qtoaster.directory.store.Directory`.  What vadddomain did
beside the database is done here too (spec 22): a new domain gets a ``postmaster`` user
(without a password) and a line in control/rcpthosts; deleting removes both and, after
confirmation, the domain's mail.

Invariants: every failure the user can cause (unknown domain, user exists, invalid
address, database trouble) ends with a one-line message on stderr and exit status 1;
control/rcpthosts is rewritten atomically and keeps its other lines as they were;
nothing outside ``HOME/domains/`` is ever removed.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from qtoaster.cli.options import home_option
from qtoaster.core.errors import QtoasterError
from qtoaster.core.home import Home
from qtoaster.directory.store import Directory

# vpopmail quota strings (spec 21.4): bytes with an optional K/M/G suffix (powers of 1024,
# as vpopmail's format_maildirquota) and an optional S or B, or NOQUOTA.
_QUOTA = re.compile(r"^(\d+)([KMG]?)[SB]?$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


def parse_quota(text: str) -> int | None:
    """Bytes for a vpopmail quota string; None for NOQUOTA.  ValueError if invalid."""
    value = text.strip()
    if value.upper() == "NOQUOTA":
        return None
    match = _QUOTA.match(value)
    if match is None:
        raise ValueError(f"invalid quota {text!r} (examples: 500M, 2G, 10485760S, NOQUOTA)")
    return int(match.group(1)) * _UNITS[match.group(2).upper()]


def _database_url(home: Home) -> str | None:
    """``[database] url`` of qtoaster.toml; None (SQLite in the home) without the file."""
    if not home.settings_file.exists():
        return None
    from qtoaster.config.settings import load_settings  # only when there are settings

    return load_settings(home.settings_file).database_url


@contextmanager
def _directory(home: Home) -> Iterator[Directory]:
    """The open directory; its errors become one clear line and exit status 1."""
    try:
        directory = Directory.open(home, _database_url(home))
    except QtoasterError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        yield directory
    except (QtoasterError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        directory.close()


def _edit_rcpthosts(home: Home, *, add: str | None = None, remove: str | None = None) -> None:
    """Add or remove one domain line of control/rcpthosts, keeping every other line."""
    path = home.control / "rcpthosts"
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        if add is None:
            return
        text, mode = "", 0o644
    lines = text.splitlines()
    present = [line.strip().lower() for line in lines]
    if add is not None and add not in present:
        lines.append(add)
    if remove is not None:
        lines = [line for line in lines if line.strip().lower() != remove]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".rcpthosts.tmp")
    tmp.write_text("".join(f"{line}\n" for line in lines), "utf-8", "surrogateescape")
    os.chmod(tmp, mode)
    # rename(2) is atomic: smtpd reading rcpthosts sees the old or the new file, never half.
    os.replace(tmp, path)


def _remove_mail(home: Home, directory: Path) -> None:
    """Remove ``directory`` (a domain's or a user's) if it is under HOME/domains/."""
    domains = home.domains.resolve()
    target = directory.resolve()
    if domains not in target.parents:
        raise click.ClickException(f"refusing to remove {target}: not under {domains}")
    if target.exists():
        shutil.rmtree(target)


@click.group()
def domain() -> None:
    """Virtual domains: add, delete, list."""


@domain.command("add")
@home_option
@click.argument("name")
def domain_add(home: Home, name: str) -> None:
    """Add domain NAME, its postmaster user and its control/rcpthosts line."""
    with _directory(home) as directory:
        directory.add_domain(name)
        added = name.lower()
        directory.add_user(f"postmaster@{added}", None)
        _edit_rcpthosts(home, add=added)
    click.echo(f"added domain {added} with user postmaster@{added} (no password)")


@domain.command("del")
@home_option
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def domain_del(home: Home, name: str, yes: bool) -> None:
    """Delete domain NAME, its users, its rcpthosts line and all its mail."""
    removed = name.lower()
    with _directory(home) as directory:
        if not directory.hosts_domain(removed):
            raise click.ClickException(f"unknown domain: {removed}")
        count = len(directory.users(removed))
        if not yes:
            click.confirm(
                f"Delete domain {removed}, its {count} user(s) and all mail under"
                f" {home.domains / removed}?",
                abort=True,
            )
        directory.delete_domain(removed)
        _edit_rcpthosts(home, remove=removed)
        _remove_mail(home, home.domains / removed)
    click.echo(f"deleted domain {removed}")


@domain.command("list")
@home_option
def domain_list(home: Home) -> None:
    """List the domains, one a line."""
    with _directory(home) as directory:
        for name in directory.domains():
            click.echo(name)


@click.group()
def user() -> None:
    """Mailbox users: add, delete, list."""


@user.command("add")
@home_option
@click.argument("address")
@click.option("--password", default=None, help="The password (visible in ps; prefer stdin).")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin's first line.")
@click.option("--quota", default=None, metavar="SIZE", help="e.g. 500M, 2G, NOQUOTA.")
def user_add(
    home: Home, address: str, password: str | None, password_stdin: bool, quota: str | None
) -> None:
    """Add user ADDRESS and create its Maildir."""
    if password is not None and password_stdin:
        raise click.ClickException("give --password or --password-stdin, not both")
    if password_stdin:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    if password == "":
        raise click.ClickException("the password is empty")
    try:
        quota_bytes = None if quota is None else parse_quota(quota)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    with _directory(home) as directory:
        directory.add_user(address, password, quota_bytes)
    note = "" if password is not None else " (no password: it cannot log in)"
    click.echo(f"added user {address.lower()}{note}")


@user.command("del")
@home_option
@click.argument("address")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def user_del(home: Home, address: str, yes: bool) -> None:
    """Delete user ADDRESS and all its mail."""
    with _directory(home) as directory:
        info = directory.user(address)
        if info is None:
            raise click.ClickException(f"unknown user: {address}")
        if not yes:
            click.confirm(
                f"Delete user {info.address} and all mail under {info.maildir.parent}?",
                abort=True,
            )
        directory.delete_user(info.address)
        _remove_mail(home, info.maildir.parent)
    click.echo(f"deleted user {info.address}")


@user.command("list")
@home_option
@click.argument("domain_name", metavar="[DOMAIN]", required=False)
def user_list(home: Home, domain_name: str | None) -> None:
    """List users (of DOMAIN): address, quota in bytes or NOQUOTA, password or no-password."""
    with _directory(home) as directory:
        for info in directory.users(domain_name):
            quota = "NOQUOTA" if info.quota is None else str(info.quota)
            secret = "password" if info.has_password else "no-password"
            click.echo(f"{info.address}\t{quota}\t{secret}")
