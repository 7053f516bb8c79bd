"""``qtoaster config check``: report every configuration problem of a home at once.

Prints one problem per line (file and line number where known) and exits 1, or
prints ``configuration OK`` and exits 0.  It reads exactly what the roles read.
"""

from __future__ import annotations

import click

from qtoaster.cli.options import home_option
from qtoaster.core.home import Home


@click.group()
def config() -> None:
    """Inspect the configuration of a qtoaster home."""


@config.command()
@home_option
def check(home: Home) -> None:
    """Check qtoaster.toml, control/, tcp.smtp and the directory database; list every problem."""
    from qtoaster.supervisor.check import check_config, check_warnings

    problems = check_config(home, directory=True)
    for warning in check_warnings(home):
        click.echo(f"warning: {warning}", err=True)
    if problems:
        for problem in problems:
            click.echo(problem)
        click.echo(f"{len(problems)} problem(s) in {home.root}", err=True)
        raise SystemExit(1)
    click.echo("configuration OK")
