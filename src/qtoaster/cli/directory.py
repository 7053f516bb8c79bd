"""``qtoaster domain``, ``user`` and ``alias``: vpopmail's vadddomain, vdeldomain,
vaddaliasdomain, vadduser, vdeluser, vpasswd, vsetuserquota, vmoduser and valias (spec 22).

Thin commands over :class:`qtoaster.directory.store.Directory`.  What vadddomain did
beside the database is done here too: a new domain gets a ``postmaster`` user (without a
password) and a line in control/rcpthosts (an alias domain gets only the line); deleting
removes the lines and, after confirmation, the domain's mail.

Invariants: every failure the user can cause (unknown domain, user exists, invalid
address, database trouble) ends with a one-line message on stderr and exit status 1;
contradictory options are usage errors (exit 2); control/rcpthosts is edited only through
:mod:`qtoaster.cli.controlfiles`; nothing outside ``HOME/domains/`` is ever removed; a
batch of users is added in one transaction, all or none.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import click

from qtoaster.cli.controlfiles import edit_rcpthosts
from qtoaster.cli.options import home_option
from qtoaster.core.errors import QtoasterError
from qtoaster.core.home import Home
from qtoaster.delivery.quota import Quota, QuotaSyntaxError, parse_quota, read_maildirsize
from qtoaster.directory.passwords import hash_password
from qtoaster.directory.schema import UserFlag
from qtoaster.directory.store import (
    UNSET,
    AliasInfo,
    Directory,
    DirectoryError,
    DomainInfo,
    NewUser,
    UserInfo,
    valid_address,
)

# Short names of the user flags, in the order `user list` and `user show` print them.
FLAG_NAMES = (
    (UserFlag.NO_POP, "nopop"),
    (UserFlag.NO_SMTP_AUTH, "noauth"),
    (UserFlag.NO_RELAY, "norelay"),
    (UserFlag.DISABLED, "disabled"),
    (UserFlag.BOUNCE_MAIL, "bounce"),
)
_UNITS = (("G", 1024**3), ("M", 1024**2), ("K", 1024))


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


def _remove_mail(home: Home, directory: Path) -> None:
    """Remove ``directory`` (a domain's or a user's) if it is under HOME/domains/."""
    domains = home.domains.resolve()
    target = directory.resolve()
    if domains not in target.parents:
        raise click.ClickException(f"refusing to remove {target}: not under {domains}")
    if target.exists():
        shutil.rmtree(target)


def _quota(text: str) -> Quota:
    """A vpopmail quota string (spec 21.4); a bad one is a one-line error (exit 1)."""
    try:
        return parse_quota(text)
    except QuotaSyntaxError as exc:
        raise click.ClickException(f"invalid {exc}") from exc


def _domain_quota(text: str) -> int | None:
    quota = _quota(text)
    if quota.messages is not None:
        raise click.ClickException(f"a domain's default quota is a size only: {text!r}")
    return quota.bytes


def size_text(size: int) -> str:
    """``50M (52428800 bytes)``: the largest exact 1024-power unit, and the bytes."""
    for unit, factor in _UNITS:
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


def _when(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def _show(rows: Iterable[tuple[str, object]]) -> None:
    for label, value in rows:
        click.echo(f"{label + ':':<16}{value}")


def _read_password(password: str | None, password_stdin: bool) -> str | None:
    """The password of --password or stdin's first line; None if neither was given."""
    if password is not None and password_stdin:
        raise click.ClickException("give --password or --password-stdin, not both")
    if password_stdin:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    if password == "":
        raise click.ClickException("the password is empty")
    return password


def _unknown_action(
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


@click.group()
def domain() -> None:
    """Virtual domains: add, delete, list, show, change."""


@domain.command("add")
@home_option
@click.argument("name")
@click.option("--quota", metavar="SIZE", help="Default quota of new users: 500M, 2G, NOQUOTA.")
@click.option("--max-users", type=click.IntRange(min=0), metavar="N", help="At most N users.")
@click.option("--catchall", metavar="ADDRESS", help="Forward mail for unknown users here.")
@click.option("--bounce", is_flag=True, help="Bounce mail for unknown users (the default).")
@click.option("--delete", is_flag=True, help="Discard mail for unknown users.")
@click.option("--secrets", is_flag=True, help="Keep CRAM-MD5/APOP secrets of its users.")
@click.option("--alias-of", metavar="DOMAIN", help="Make NAME a second name of DOMAIN.")
def domain_add(
    home: Home,
    name: str,
    quota: str | None,
    max_users: int | None,
    catchall: str | None,
    bounce: bool,
    delete: bool,
    secrets: bool,
    alias_of: str | None,
) -> None:
    """Add domain NAME, its postmaster user and its control/rcpthosts line."""
    unknown = _unknown_action(catchall, bounce, delete)
    added = name.lower()
    if alias_of is not None:
        if quota is not None or max_users is not None or unknown is not None or secrets:
            raise click.UsageError("--alias-of takes no other option: the target's apply")
        with _directory(home) as directory:
            directory.add_alias_domain(added, alias_of)
            edit_rcpthosts(home, add=added)
        click.echo(f"added alias domain {added} -> {alias_of.lower()}")
        return
    default_quota = None if quota is None else _domain_quota(quota)
    with _directory(home) as directory:
        directory.add_domain(
            added,
            default_quota=default_quota,
            max_users=max_users,
            unknown_user=unknown or "bounce",
            secrets=secrets,
        )
        directory.add_user(f"postmaster@{added}", None)
        edit_rcpthosts(home, add=added)
    click.echo(f"added domain {added} with user postmaster@{added} (no password)")


@domain.command("del")
@home_option
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def domain_del(home: Home, name: str, yes: bool) -> None:
    """Delete domain NAME, its users, its alias domains, rcpthosts lines and all its mail.

    An alias domain: only that name goes; no mail is removed."""
    removed = name.lower()
    with _directory(home) as directory:
        info = directory.domain(removed)
        if info is None:
            raise click.ClickException(f"unknown domain: {removed}")
        if info.alias_of is not None:
            if not yes:
                click.confirm(f"Delete alias domain {removed} of {info.alias_of}?", abort=True)
            directory.delete_domain(removed)
            edit_rcpthosts(home, remove=removed)
            click.echo(f"deleted alias domain {removed} (no mail removed)")
            return
        if not yes:
            also = "".join(f", alias domain {alias}" for alias in info.alias_domains)
            click.confirm(
                f"Delete domain {removed}, its {info.users} user(s){also} and all mail under"
                f" {home.domains / removed}?",
                abort=True,
            )
        directory.delete_domain(removed)
        for hosted in (removed, *info.alias_domains):
            edit_rcpthosts(home, remove=hosted)
        _remove_mail(home, home.domains / removed)
    click.echo(f"deleted domain {removed}")


@domain.command("list")
@home_option
def domain_list(home: Home) -> None:
    """List the domains, one a line; an alias domain as ``alias -> target``."""
    with _directory(home) as directory:
        targets: dict[str, str] = {}
        names = directory.domains()
        for name in names:
            info = directory.domain(name)
            for alias in info.alias_domains if info is not None else ():
                targets[alias] = name
        for name in names:
            click.echo(f"{name} -> {targets[name]}" if name in targets else name)


def _unknown_text(action: str) -> str:
    if action == "bounce":
        return "bounce (refused at RCPT by chkuser)"
    if action == "delete":
        return "delete (accepted and discarded)"
    return f"forward to {action} (catch-all)"


@domain.command("show")
@home_option
@click.argument("name")
def domain_show(home: Home, name: str) -> None:
    """Show every setting and count of domain NAME."""
    with _directory(home) as directory:
        info = directory.domain(name)
    if info is None:
        raise click.ClickException(f"unknown domain: {name.lower()}")
    if info.alias_of is not None:
        # An alias domain has no settings of its own: its target's apply (store.resolve).
        of_target = f"(of {info.alias_of})"
        _show(
            [
                ("domain", info.name),
                ("alias of", f"{info.alias_of} (whose settings apply)"),
                ("users", f"{info.users} {of_target}"),
                ("aliases", f"{info.aliases} {of_target}"),
                ("created", _when(info.created)),
            ]
        )
        return
    max_users = "unlimited" if info.max_users is None else str(info.max_users)
    quota = "NOQUOTA (unlimited)" if info.default_quota is None else size_text(info.default_quota)
    _show(
        [
            ("domain", info.name),
            ("alias of", "- (a real domain)"),
            ("default quota", quota),
            ("max users", max_users),
            ("unknown users", _unknown_text(info.unknown_user)),
            ("secrets", "kept (CRAM-MD5/APOP)" if info.secrets else "not kept"),
            ("users", info.users),
            ("aliases", info.aliases),
            ("alias domains", ", ".join(info.alias_domains) or "none"),
            ("created", _when(info.created)),
        ]
    )


@domain.command("catchall")
@home_option
@click.argument("domain_name", metavar="DOMAIN")
@click.argument("address", required=False)
@click.option("--bounce", is_flag=True, help="Bounce mail for unknown users.")
@click.option("--delete", is_flag=True, help="Discard mail for unknown users.")
def domain_catchall(
    home: Home, domain_name: str, address: str | None, bounce: bool, delete: bool
) -> None:
    """What DOMAIN does with mail for unknown users: forward it to ADDRESS, bounce or delete
    it (vpopmail's .qmail-default)."""
    unknown = _unknown_action(address, bounce, delete, required=True)
    assert unknown is not None
    with _directory(home) as directory:
        directory.set_domain(domain_name, unknown_user=unknown)
        info = directory.domain(domain_name)
    assert info is not None
    click.echo(f"{info.name}: unknown users: {_unknown_text(info.unknown_user)}")


@domain.command("set")
@home_option
@click.argument("domain_name", metavar="DOMAIN")
@click.option("--quota", metavar="SIZE", help="Default quota of new users, or NOQUOTA.")
@click.option("--max-users", type=click.IntRange(min=0), metavar="N", help="At most N users.")
@click.option("--no-max-users", is_flag=True, help="No limit on the number of users.")
@click.option("--secrets/--no-secrets", default=None, help="Keep CRAM-MD5/APOP secrets.")
def domain_set(
    home: Home,
    domain_name: str,
    quota: str | None,
    max_users: int | None,
    no_max_users: bool,
    secrets: bool | None,
) -> None:
    """Change DOMAIN's default quota, user limit or secrets choice."""
    if max_users is not None and no_max_users:
        raise click.UsageError("give --max-users or --no-max-users, not both")
    changes: dict[str, Any] = {}
    if quota is not None:
        changes["default_quota"] = _domain_quota(quota)
    if max_users is not None or no_max_users:
        changes["max_users"] = max_users
    if secrets is not None:
        changes["secrets"] = secrets
    if not changes:
        raise click.UsageError("nothing to change: give --quota, --max-users or --secrets")
    with _directory(home) as directory:
        directory.set_domain(domain_name, **changes)
        info = directory.domain(domain_name)
    assert info is not None
    _print_domain_settings(info)
    if secrets:
        click.echo("existing users get secrets at their next `qtoaster user passwd`")


def _print_domain_settings(info: DomainInfo) -> None:
    quota = "NOQUOTA" if info.default_quota is None else size_text(info.default_quota)
    users = "unlimited" if info.max_users is None else str(info.max_users)
    secrets = "kept" if info.secrets else "not kept"
    click.echo(f"{info.name}: default quota {quota}; max users {users}; secrets {secrets}")


# -- user -------------------------------------------------------------------------------


@click.group()
def user() -> None:
    """Mailbox users: add, delete, list, show, change."""


@user.command("add")
@home_option
@click.argument("address", required=False)
@click.option("--password", default=None, help="The password (visible in ps; prefer stdin).")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin's first line.")
@click.option("--quota", default=None, metavar="SIZE", help="e.g. 500M, 2G, 10M,1000C, NOQUOTA.")
@click.option(
    "--from-file",
    type=click.File("r", encoding="utf-8", errors="surrogateescape"),
    metavar="FILE",
    help="Add every user of FILE (- = stdin): lines address[:password[:quota]].",
)
def user_add(
    home: Home,
    address: str | None,
    password: str | None,
    password_stdin: bool,
    quota: str | None,
    from_file: IO[str] | None,
) -> None:
    """Add user ADDRESS and create its Maildir, or every user of --from-file at once."""
    if from_file is not None:
        if address is not None or password is not None or password_stdin or quota is not None:
            raise click.UsageError("--from-file takes no ADDRESS, password or quota")
        _add_batch(home, from_file)
        return
    if address is None:
        raise click.UsageError("give an ADDRESS or --from-file FILE")
    password = _read_password(password, password_stdin)
    limits = None if quota is None else _quota(quota)
    with _directory(home) as directory:
        if limits is None:
            directory.add_user(address, password)
        else:
            directory.add_user(address, password, limits.bytes, quota_messages=limits.messages)
            if limits.bytes is None:
                _no_default_quota(directory, [address])
    note = "" if password is not None else " (no password: it cannot log in)"
    click.echo(f"added user {address.lower()}{note}")


def _no_default_quota(directory: Directory, addresses: Iterable[str]) -> None:
    """An explicit NOQUOTA (or count-only quota) wins over the domain's default size, which
    add_user applies to a user without a size."""
    for address in addresses:
        info = directory.user(address)
        if info is not None and info.quota is not None:
            directory.set_user(address, quota=None)


@user.command("del")
@home_option
@click.argument("address")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def user_del(home: Home, address: str, yes: bool) -> None:
    """Delete user ADDRESS, its forwards and all its mail."""
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


@user.command("passwd")
@home_option
@click.argument("address")
@click.option("--password", default=None, help="The password (visible in ps; prefer stdin).")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin's first line.")
@click.option("--remove", is_flag=True, help="Remove the password: the user cannot log in.")
def user_passwd(
    home: Home, address: str, password: str | None, password_stdin: bool, remove: bool
) -> None:
    """Set the password of ADDRESS (asked for without an option), or remove it."""
    new = _read_password(password, password_stdin)
    if remove and new is not None:
        raise click.ClickException("give a password or --remove, not both")
    if not remove and new is None:
        new = click.prompt("New password", hide_input=True, confirmation_prompt=True)
        if not new:
            raise click.ClickException("the password is empty")
    with _directory(home) as directory:
        directory.set_password(address, new)
        info = directory.user(address)
    assert info is not None
    if new is None:
        click.echo(f"removed the password of {info.address}: it cannot log in")
    else:
        also = " and its CRAM-MD5/APOP secrets" if info.has_secrets else ""
        click.echo(f"changed the password of {info.address}{also}")


@user.command("quota")
@home_option
@click.argument("address")
@click.argument("size", metavar="SIZE")
def user_quota(home: Home, address: str, size: str) -> None:
    """Set the Maildir++ quota of ADDRESS: 50M, 10485760S,1000C, NOQUOTA (spec 21.4)."""
    limits = _quota(size)
    with _directory(home) as directory:
        info = directory.set_user(address, quota=limits.bytes, quota_messages=limits.messages)
    click.echo(f"{info.address}: quota {quota_text(info.quota, info.quota_messages)}")


def _usage_text(info: UserInfo) -> str:
    found = read_maildirsize(info.maildir)
    if found is None:
        return "not computed (no maildirsize yet)"
    _definition, usage, _lines, _mtime = found
    text = f"{usage.bytes} bytes in {usage.messages} message(s)"
    if info.quota:
        text += f", {100 * usage.bytes // info.quota}% of {size_text(info.quota).split()[0]}"
    return text


def _secrets_text(info: UserInfo, domain_info: DomainInfo | None) -> str:
    if info.secrets is None:
        wanted = domain_info is not None and domain_info.secrets
        choice = f"the domain's choice ({'kept' if wanted else 'not kept'})"
    else:
        choice = "kept" if info.secrets else "not kept"
    return f"{choice}; stored: {'yes' if info.has_secrets else 'no'}"


@user.command("show")
@home_option
@click.argument("address")
def user_show(home: Home, address: str) -> None:
    """Show every setting of ADDRESS and its Maildir++ usage."""
    with _directory(home) as directory:
        info = directory.user(address)
        if info is None:
            raise click.ClickException(f"unknown user: {address}")
        domain_info = directory.domain(info.domain)
        usage = _usage_text(info)
    _show(
        [
            ("address", info.address),
            ("domain", info.domain),
            ("local part", info.local_part),
            ("maildir", info.maildir),
            ("password", "set" if info.has_password else "none (cannot log in)"),
            ("quota", quota_text(info.quota, info.quota_messages)),
            ("usage", usage),
            ("flags", flags_text(info.flags)),
            ("secrets", _secrets_text(info, domain_info)),
            ("created", _when(info.created)),
        ]
    )


@user.command("set")
@home_option
@click.argument("address")
@click.option("--pop/--no-pop", default=None, help="Allow POP3 logins.")
@click.option("--smtp-auth/--no-smtp-auth", default=None, help="Allow SMTP AUTH.")
@click.option("--relay/--no-relay", default=None, help="Let it relay once authenticated.")
@click.option("--enable/--disable", default=None, help="Allow any login (mail still arrives).")
@click.option("--bounce-mail/--no-bounce-mail", default=None, help="Bounce its mail.")
@click.option("--secrets", "secrets", flag_value="on", help="Keep CRAM-MD5/APOP secrets.")
@click.option("--no-secrets", "secrets", flag_value="off", help="Keep none; forget them.")
@click.option("--domain-secrets", "secrets", flag_value="domain", help="As its domain says.")
def user_set(
    home: Home,
    address: str,
    pop: bool | None,
    smtp_auth: bool | None,
    relay: bool | None,
    enable: bool | None,
    bounce_mail: bool | None,
    secrets: str | None,
) -> None:
    """Change the flags of ADDRESS (vpopmail's vmoduser) or its secrets choice."""
    add, clear = UserFlag(0), UserFlag(0)
    # --pop etc. allow something: they clear a NO_* bit; --bounce-mail sets its bit.
    for allowed, flag in (
        (pop, UserFlag.NO_POP),
        (smtp_auth, UserFlag.NO_SMTP_AUTH),
        (relay, UserFlag.NO_RELAY),
        (enable, UserFlag.DISABLED),
        (None if bounce_mail is None else not bounce_mail, UserFlag.BOUNCE_MAIL),
    ):
        if allowed is True:
            clear |= flag
        elif allowed is False:
            add |= flag
    if not add and not clear and secrets is None:
        raise click.UsageError("nothing to change: give at least one option")
    choice = UNSET if secrets is None else {"on": True, "off": False, "domain": None}[secrets]
    with _directory(home) as directory:
        info = directory.set_user(address, add_flags=add, clear_flags=clear, secrets=choice)
        domain_info = directory.domain(info.domain)
    click.echo(f"{info.address}: flags {flags_text(info.flags)}")
    if secrets is not None:
        click.echo(f"{info.address}: secrets {_secrets_text(info, domain_info)}")
        from_domain = domain_info is not None and domain_info.secrets
        wanted = info.secrets if info.secrets is not None else from_domain
        if wanted and not info.has_secrets:
            click.echo("the secrets take effect at the next `qtoaster user passwd`")


@user.command("list")
@home_option
@click.argument("domain_name", metavar="[DOMAIN]", required=False)
def user_list(home: Home, domain_name: str | None) -> None:
    """List users (of DOMAIN): address, quota (bytes, 'S,C' form with a message limit, or
    NOQUOTA), password or no-password, flags (- or e.g. nopop,noauth); tab-separated."""
    with _directory(home) as directory:
        for info in directory.users(domain_name):
            if info.quota_messages is not None:
                quota = Quota(info.quota or None, info.quota_messages).definition()
            else:
                quota = "NOQUOTA" if info.quota is None else str(info.quota)
            secret = "password" if info.has_password else "no-password"
            click.echo(f"{info.address}\t{quota}\t{secret}\t{flags_text(info.flags)}")


# -- user add --from-file ---------------------------------------------------------------


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


def _add_batch(home: Home, source: IO[str]) -> None:
    started = time.monotonic()
    entries = parse_batch(source)
    if not entries:
        raise click.ClickException("no users in the file")
    with _directory(home) as directory:
        infos = _check_batch(directory, entries)
        new = _new_users(entries)
        try:
            directory.add_users(new)  # one transaction: all or none
        except DirectoryError as exc:
            raise click.ClickException(f"{exc}; nobody was added") from exc
        with_default = {name for name, info in infos.items() if info.default_quota is not None}
        _no_default_quota(
            directory,
            [
                e.address
                for e in entries
                if e.quota is not None and e.quota.bytes is None and e.domain in with_default
            ],
        )
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


@click.group()
def alias() -> None:
    """Forwards (vpopmail's valias): add, delete, list."""


@alias.command("add")
@home_option
@click.argument("address")
@click.argument("targets", metavar="TARGET...", nargs=-1, required=True)
@click.option("--keep-copy", is_flag=True, help="Also deliver to the user's own mailbox.")
def alias_add(home: Home, address: str, targets: tuple[str, ...], keep_copy: bool) -> None:
    """Forward ADDRESS to each TARGET (an address, or a Maildir path ending in /)."""
    with _directory(home) as directory:
        added = directory.add_alias(address, list(targets), keep_copy)
        mailbox = directory.user(address)
        recipient = directory.resolve(address)
    assert recipient is not None
    copy = " (keep copy)" if recipient.keep_copy else ""
    click.echo(
        f"added {added} target(s): {address.lower()} -> {', '.join(recipient.forwards)}{copy}"
    )
    if mailbox is not None and not keep_copy:
        # vdelivermail reads valias before the user (spec 22): the mailbox gets nothing.
        click.echo(f"note: user {mailbox.address} gets no copy (see --keep-copy)")


@alias.command("del")
@home_option
@click.argument("address")
@click.argument("targets", metavar="[TARGET...]", nargs=-1)
def alias_del(home: Home, address: str, targets: tuple[str, ...]) -> None:
    """Remove the TARGETs of ADDRESS (all of them without TARGET)."""
    with _directory(home) as directory:
        removed = directory.delete_alias(address, list(targets) or None)
    click.echo(f"removed {removed} target(s) of {address.lower()}")


@alias.command("list")
@home_option
@click.argument("domain_name", metavar="[DOMAIN]", required=False)
def alias_list(home: Home, domain_name: str | None) -> None:
    """List forwards: ``address -> target[, target] [(keep copy)]``, one address a line."""
    with _directory(home) as directory:
        for line in _alias_lines(directory.aliases(domain_name)):
            click.echo(line)


def _alias_lines(rows: Iterable[AliasInfo]) -> list[str]:
    grouped: dict[str, tuple[list[str], bool]] = {}
    for row in rows:
        targets, keep = grouped.setdefault(row.address, ([], False))
        targets.append(row.target)
        grouped[row.address] = (targets, keep or row.keep_copy)
    return [
        f"{address} -> {', '.join(targets)}{' (keep copy)' if keep else ''}"
        for address, (targets, keep) in grouped.items()
    ]
