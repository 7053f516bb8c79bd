"""Options shared by every subcommand."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import click

from qtoaster.core.home import Home

F = TypeVar("F", bound=Callable[..., Any])


def home_option(func: F) -> F:
    """``--home DIR`` (default ``$QTOASTER_HOME``, else ``./qtoaster-home``), passed as a Home."""

    def convert(ctx: click.Context, param: click.Parameter, value: str | None) -> Home:
        home = Home.resolve(value)
        if os.geteuid() == 0:  # what a command run as root wrote gets the roles' owners
            ctx.call_on_close(lambda: give_owners(home))
        return home

    return click.option(
        "--home",
        "home",
        default=None,
        callback=convert,
        metavar="DIR",
        help="qtoaster home (default: $QTOASTER_HOME, else ./qtoaster-home)",
    )(func)


def give_owners(home: Home) -> None:
    """After a command run as root: the owners of decision 0007 (a home without its
    accounts yet is left alone; config check reports it)."""
    from qtoaster.config.settings import load_settings
    from qtoaster.core.errors import ConfigError
    from qtoaster.supervisor import accounts, ownership

    if os.geteuid() != 0 or not home.settings_file.is_file():
        return  # a role that dropped root (serve) has nothing to give
    try:
        users = load_settings(home.settings_file).users
    except ConfigError:
        return
    if not accounts.check_accounts(users):
        ownership.apply(home, users)


def provision(home: Home) -> tuple[list[str], list[str]]:
    """As root, what init, restore and fix-owners do: create the roles' missing users and
    groups ([users]), then give the home their owners. (accounts created, owner changes);
    ConfigError when an account cannot be made; ([], []) when not root."""
    from qtoaster.config.settings import load_settings
    from qtoaster.core.privilege import running_as_root
    from qtoaster.supervisor import accounts, ownership

    if not running_as_root():
        return [], []
    users = load_settings(home.settings_file).users
    made = accounts.ensure_accounts(users)
    return made, ownership.apply(home, users)
