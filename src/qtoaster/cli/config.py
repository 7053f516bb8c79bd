"""``qtoaster config check``: report every configuration problem of a home at once.

Prints one problem per line (file and line number where known) and exits 1, or
prints ``configuration OK`` and exits 0.  It reads exactly what the roles read.
"""

from __future__ import annotations

import click

from qtoaster.cli.options import home_option, provision
from qtoaster.core.errors import ConfigError
from qtoaster.core.home import Home


@click.group()
def config() -> None:
    """Inspect the configuration of a qtoaster home."""


@config.command()
@home_option
def check(home: Home) -> None:
    """Check qtoaster.toml, control/, tcp.smtp and the directory database; list every problem."""
    from qtoaster.supervisor.check import check_config, check_warnings

    missing, owners = _owner_problems(home)
    problems = check_config(home, directory=True) + missing
    for warning in check_warnings(home) + owners:
        click.echo(f"warning: {warning}", err=True)
    if problems:
        for problem in problems:
            click.echo(problem)
        click.echo(f"{len(problems)} problem(s) in {home.root}", err=True)
        raise SystemExit(1)
    click.echo("configuration OK")


@config.command("fix-owners")
@home_option
def fix_owners(home: Home) -> None:
    """As root: create the roles' users and groups ([users]) and give the home their owners."""
    from qtoaster.cli.run import load_or_exit
    from qtoaster.core.privilege import running_as_root

    if not running_as_root():
        raise click.ClickException("fix-owners needs root (the roles change user only under root)")
    load_or_exit(home)  # a clear message for settings that do not load
    try:
        made, changes = provision(home)
    except ConfigError as exc:
        raise click.ClickException("\n".join(exc.problems)) from None
    for line in made + changes:
        click.echo(line)
    click.echo(f"owners OK in {home.root}")


def _owner_problems(home: Home) -> tuple[list[str], list[str]]:
    """As root: the missing accounts (a problem: run refuses to start without them), and
    owners or modes that differ from decision 0007's layout (warnings: run as root gives
    the home its owners at start, fix-owners does it now). Run by anyone else, every role
    runs as that user: nothing to check."""
    from qtoaster.config.settings import load_settings
    from qtoaster.core.privilege import running_as_root
    from qtoaster.supervisor import accounts, ownership

    if not running_as_root():
        return [], []
    try:
        settings = load_settings(home.settings_file)
    except ConfigError:
        return [], []  # check_config reported it
    users = settings.users
    optional = ("metrics",) if settings.metrics_listen is not None else ()
    missing = accounts.check_accounts(users, optional=optional)
    return missing, [] if missing else ownership.check(home, users)
