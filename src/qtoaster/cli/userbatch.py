"""``qtoaster user add --from-file``: many users in one transaction, all or none.

Lines ``address[:password[:quota]]``; every line is checked before anything is written,
passwords are hashed in parallel threads (argon2 releases the GIL), then one
:meth:`Directory.add_users` adds them all.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO

import click

from qtoaster.cli.dirsupport import open_directory
from qtoaster.core.home import Home
from qtoaster.directory.passwords import hash_password
from qtoaster.directory.store import (
    Directory,
    DirectoryError,
    DomainInfo,
    NewUser,
    valid_address,
)
from qtoaster.maildir.quota import Quota, QuotaSyntaxError, parse_quota


def no_default_quota(directory: Directory, addresses: Iterable[str]) -> None:
    """An explicit NOQUOTA (or count-only quota) wins over the domain's default size, which
    add_user applies to a user without a size."""
    for address in addresses:
        info = directory.user(address)
        if info is not None and info.quota is not None:
            directory.set_user(address, quota=None)


@dataclass(frozen=True, slots=True)
class BatchLine:
    number: int
    address: str  # validated, lower-cased
    password: str | None
    quota: Quota | None  # None: the field was empty (the domain's default)

    @property
    def domain(self) -> str:
        return self.address.partition("@")[2]


def _batch_error(entry: BatchLine | int, problem: str) -> click.ClickException:
    where = f"line {entry}" if isinstance(entry, int) else f"line {entry.number} ({entry.address})"
    return click.ClickException(f"{where}: {problem}; nobody was added")


def parse_batch(lines: Iterable[str]) -> list[BatchLine]:
    """The users of a ``--from-file`` text: ``address[:password[:quota]]`` a line.

    The address ends at the first ``:``, the quota starts after the last one (so a password
    holding ``:`` needs the quota field, possibly empty).  Blank lines and lines starting
    with ``#`` are skipped; an empty password means none.  ClickException naming the line
    for an invalid address or quota or a repeated address."""
    entries: list[BatchLine] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(lines, 1):
        line = raw.removesuffix("\n").removesuffix("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        address, _, rest = line.partition(":")
        password, _, quota = rest.rpartition(":") if ":" in rest else (rest, "", "")
        try:
            local, domain_name = valid_address(address.strip())
            limits = parse_quota(quota) if quota.strip() else None
        except DirectoryError as exc:
            raise _batch_error(number, str(exc)) from exc
        except QuotaSyntaxError as exc:
            raise _batch_error(number, f"invalid {exc}") from exc
        canonical = f"{local}@{domain_name}"
        if canonical in seen:
            raise _batch_error(number, f"{canonical} is already on line {seen[canonical]}")
        seen[canonical] = number
        entries.append(BatchLine(number, canonical, password or None, limits))
    return entries


def _check_batch(directory: Directory, entries: list[BatchLine]) -> dict[str, DomainInfo]:
    """The domains of ``entries``; ClickException naming the first line that cannot be
    added (unknown or alias domain, existing user, too many users)."""
    by_domain: dict[str, list[BatchLine]] = {}
    for entry in entries:
        by_domain.setdefault(entry.domain, []).append(entry)
    infos: dict[str, DomainInfo] = {}
    for name, group in by_domain.items():
        info = directory.domain(name)
        if info is None:
            raise _batch_error(group[0], f"unknown domain: {name}")
        if info.alias_of is not None:
            raise _batch_error(group[0], f"{name} is an alias of {info.alias_of}")
        existing = {u.address for u in directory.users(name)}
        for entry in group:
            if entry.address in existing:
                raise _batch_error(entry, "the user already exists")
        if info.max_users is not None and info.users + len(group) > info.max_users:
            first_over = group[max(info.max_users - info.users, 0)]
            raise _batch_error(first_over, f"{name} has its maximum of {info.max_users} users")
        infos[name] = info
    return infos


def hash_passwords(passwords: list[str]) -> list[str]:
    """argon2id hashes of ``passwords``, in order, on every core.

    Threads, not processes: argon2-cffi releases the GIL while hashing, and a thread pool
    measured faster than a process pool here (no start-up, no pickling)."""
    if len(passwords) < 2:
        return [hash_password(p) for p in passwords]
    workers = min(os.cpu_count() or 1, len(passwords))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(hash_password, passwords))


def _new_users(entries: list[BatchLine]) -> list[NewUser]:
    """``entries`` as NewUser values, their passwords hashed in parallel."""
    secrets = [e.password for e in entries if e.password is not None]
    hashes = iter(hash_passwords(secrets))
    return [
        NewUser(
            e.address,
            None if e.password is None else next(hashes),
            None if e.quota is None else e.quota.bytes,
            None if e.quota is None else e.quota.messages,
        )
        for e in entries
    ]


def store_batch(directory: Directory, entries: list[BatchLine]) -> dict[str, DomainInfo]:
    """Check ``entries``, hash their passwords in parallel and add them in one transaction
    (all or none): the CLI's ``--from-file`` and the API's batch (cli/adminops.py).  The
    domains they went to; ClickException naming the first entry that cannot be added."""
    infos = _check_batch(directory, entries)
    new = _new_users(entries)
    try:
        directory.add_users(new)  # one transaction: all or none
    except DirectoryError as exc:
        raise click.ClickException(f"{exc}; nobody was added") from exc
    with_default = {name for name, info in infos.items() if info.default_quota is not None}
    no_default_quota(
        directory,
        [
            e.address
            for e in entries
            if e.quota is not None and e.quota.bytes is None and e.domain in with_default
        ],
    )
    return infos


def add_batch(home: Home, source: IO[str]) -> None:
    started = time.monotonic()
    entries = parse_batch(source)
    if not entries:
        raise click.ClickException("no users in the file")
    with open_directory(home) as directory:
        infos = store_batch(directory, entries)
    passwords = sum(1 for e in entries if e.password is not None)
    click.echo(
        f"added {len(entries)} user(s) in {len(infos)} domain(s), {passwords} with a password,"
        f" in {time.monotonic() - started:.1f} s"
    )
    keeping = sorted(
        {e.domain for e in entries if e.password is not None and infos[e.domain].secrets}
    )
    if keeping:
        click.echo(
            f"note: {', '.join(keeping)} keep CRAM-MD5/APOP secrets; these users get"
            " theirs at their next `qtoaster user passwd`"
        )


# -- alias ------------------------------------------------------------------------------
