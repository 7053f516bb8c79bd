"""``qtoaster alias``: vpopmail's valias: forwards of an address, with or without a copy
kept in its mailbox."""

from __future__ import annotations

from collections.abc import Iterable

import click

from qtoaster.cli.dirsupport import open_directory
from qtoaster.cli.options import home_option
from qtoaster.core.home import Home
from qtoaster.directory.store import (
    AliasInfo,
)


@click.group()
def alias() -> None:
    """Forwards (vpopmail's valias): add, del, list."""


@alias.command("add")
@home_option
@click.argument("address")
@click.argument("targets", metavar="TARGET...", nargs=-1, required=True)
@click.option("--keep-copy", is_flag=True, help="Also deliver to the user's own mailbox.")
def alias_add(home: Home, address: str, targets: tuple[str, ...], keep_copy: bool) -> None:
    """Forward ADDRESS to each TARGET (an address, or a Maildir path ending in /)."""
    with open_directory(home) as directory:
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
    with open_directory(home) as directory:
        removed = directory.delete_alias(address, list(targets) or None)
    click.echo(f"removed {removed} target(s) of {address.lower()}")


@alias.command("list")
@home_option
@click.argument("domain_name", metavar="[DOMAIN]", required=False)
def alias_list(home: Home, domain_name: str | None) -> None:
    """List forwards, one address a line: address -> target, target (keep copy)."""
    with open_directory(home) as directory:
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
