"""``qtoaster init``: create a home with commented defaults, then say what to do next.

A thin shell over cli.newhome.init_home; it never overwrites an existing home.
"""

from __future__ import annotations

import click

from qtoaster.cli.options import home_option, provision
from qtoaster.core.errors import ConfigError
from qtoaster.core.home import Home


@click.command()
@home_option
@click.option("--me", metavar="HOST", help="this server's host name (qmail's control/me)")
@click.option(
    "--smtp",
    multiple=True,
    metavar="ADDR:PORT",
    help="SMTP listen address, repeatable (default 127.0.0.1:2525; as root :25, :587, :465)",
)
@click.option("--submission", multiple=True, metavar="ADDR:PORT", help="submission listener")
@click.option("--smtps", multiple=True, metavar="ADDR:PORT", help="SMTPS listener")
@click.option("--pop3", multiple=True, metavar="ADDR:PORT", help="POP3 listener")
@click.option("--pop3s", multiple=True, metavar="ADDR:PORT", help="POP3S listener")
@click.option("--imap", multiple=True, metavar="ADDR:PORT", help="IMAP listener")
@click.option("--imaps", multiple=True, metavar="ADDR:PORT", help="IMAPS listener")
@click.option("--demo", is_flag=True, help="throw-away home: fsync off, debug logging")
@click.option("--quiet", "-q", is_flag=True, help="omit the generic next steps (for scripts)")
def init(
    home: Home,
    me: str | None,
    smtp: tuple[str, ...],
    submission: tuple[str, ...],
    smtps: tuple[str, ...],
    pop3: tuple[str, ...],
    pop3s: tuple[str, ...],
    imap: tuple[str, ...],
    imaps: tuple[str, ...],
    demo: bool,
    quiet: bool,
) -> None:
    """Create a new qtoaster home."""
    from qtoaster.cli.newhome import init_home

    if not me:
        raise click.UsageError(
            "--me HOST is required: the host name of this mail server, "
            "e.g. --me mail.example.com (it becomes control/me)"
        )
    try:
        given = bool(smtp or submission or smtps or pop3 or pop3s or imap or imaps)
        init_home(
            home,
            me,
            smtp=list(smtp) if given else None,
            submission=list(submission) if given else None,
            smtps=list(smtps) if given else None,
            pop3=list(pop3) if given else None,
            pop3s=list(pop3s) if given else None,
            imap=list(imap) if given else None,
            imaps=list(imaps) if given else None,
            demo=demo,
        )
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"qtoaster init: {problem}", err=True)
        raise SystemExit(1) from None
    _accounts(home)
    _report(home, next_steps=not quiet)


def _accounts(home: Home) -> None:
    """As root: the roles' users and groups exist and own their part of the home."""
    try:
        made, _ = provision(home)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"qtoaster init: {problem}", err=True)
        raise SystemExit(1) from None
    for line in made:
        click.echo(f"created {line}")


def _report(home: Home, *, next_steps: bool) -> None:
    click.echo(f"created {home.root}")
    for path in sorted(home.root.iterdir()):
        click.echo(f"  {path.name}{'/' if path.is_dir() else ''}")
        if path == home.control:
            click.echo(f"    {' '.join(sorted(p.name for p in path.iterdir()))}")
    if not next_steps:
        return  # a script (scripts/demo) does them itself and says its own
    flag = f"--home {home.root}"
    click.echo("next steps:")
    click.echo(f"  qtoaster domain add example.com {flag}")
    click.echo(f"  qtoaster user add alice@example.com --password-stdin {flag}")
    click.echo(f"  add example.com to {home.control / 'rcpthosts'} if it is not a directory domain")
    click.echo(f"  qtoaster config check {flag}")
    click.echo(f"  qtoaster run {flag}")
