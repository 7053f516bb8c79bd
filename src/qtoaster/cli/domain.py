"""``qtoaster domain``: vpopmail's vadddomain, vdeldomain and vaddaliasdomain (spec 22).

What vadddomain did beside the database is done here too: a new domain gets a
``postmaster`` user (without a password) and a line in control/rcpthosts (an alias domain
gets only the line); deleting removes the lines and, after confirmation, the mail.
control/rcpthosts is edited only through :mod:`qtoaster.cli.controlfiles`.
"""

from __future__ import annotations

from typing import Any

import click

from qtoaster.cli.controlfiles import edit_rcpthosts
from qtoaster.cli.dirsupport import (
    open_directory,
    parse_domain_quota,
    remove_mail,
    show_rows,
    size_text,
    unknown_action,
    when_text,
)
from qtoaster.cli.options import home_option
from qtoaster.core.domain import domain_key
from qtoaster.core.home import Home
from qtoaster.directory.store import (
    DomainInfo,
)


@click.group()
def domain() -> None:
    """Virtual domains: add, del, set, catchall, show, list."""


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
    unknown = unknown_action(catchall, bounce, delete)
    added = domain_key(name)  # bücher.example is kept as xn--bcher-kva.example
    if alias_of is not None:
        if quota is not None or max_users is not None or unknown is not None or secrets:
            raise click.UsageError("--alias-of takes no other option: the target's apply")
        with open_directory(home) as directory:
            directory.add_alias_domain(added, alias_of)
            edit_rcpthosts(home, add=added)
        click.echo(f"added alias domain {added} -> {domain_key(alias_of)}")
        return
    default_quota = None if quota is None else parse_domain_quota(quota)
    with open_directory(home) as directory:
        directory.add_domain(
            added,
            default_quota=default_quota,
            max_users=max_users,
            unknown_user=unknown or "bounce",
            secrets=secrets,
        )
        directory.add_user(f"postmaster@{added}", None)
        edit_rcpthosts(home, add=added)
    shown = f"{added} ({name})" if added != name.lower() else added
    click.echo(f"added domain {shown} with user postmaster@{added} (no password)")


@domain.command("del")
@home_option
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def domain_del(home: Home, name: str, yes: bool) -> None:
    """Delete domain NAME, its users, its alias domains, rcpthosts lines and all its mail.

    An alias domain: only that name goes; no mail is removed."""
    removed = domain_key(name)
    with open_directory(home) as directory:
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
        remove_mail(home, home.domains / removed)
    click.echo(f"deleted domain {removed}")


@domain.command("list")
@home_option
def domain_list(home: Home) -> None:
    """List the domains, one a line; an alias domain as ``alias -> target``."""
    with open_directory(home) as directory:
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
    with open_directory(home) as directory:
        info = directory.domain(name)
    if info is None:
        raise click.ClickException(f"unknown domain: {domain_key(name)}")
    if info.alias_of is not None:
        # An alias domain has no settings of its own: its target's apply (store.resolve).
        of_target = f"(of {info.alias_of})"
        show_rows(
            [
                ("domain", info.name),
                ("alias of", f"{info.alias_of} (whose settings apply)"),
                ("users", f"{info.users} {of_target}"),
                ("aliases", f"{info.aliases} {of_target}"),
                ("created", when_text(info.created)),
            ]
        )
        return
    max_users = "unlimited" if info.max_users is None else str(info.max_users)
    quota = "NOQUOTA (unlimited)" if info.default_quota is None else size_text(info.default_quota)
    show_rows(
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
            ("created", when_text(info.created)),
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
    unknown = unknown_action(address, bounce, delete, required=True)
    assert unknown is not None
    with open_directory(home) as directory:
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
        changes["default_quota"] = parse_domain_quota(quota)
    if max_users is not None or no_max_users:
        changes["max_users"] = max_users
    if secrets is not None:
        changes["secrets"] = secrets
    if not changes:
        raise click.UsageError("nothing to change: give --quota, --max-users or --secrets")
    with open_directory(home) as directory:
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
