"""``qtoaster token add|list|del``: the http API's Bearer tokens (docs/http.md).

A token is printed once, at ``add``; the file keeps its SHA-256 only (httpd/tokens.py).
"""

from __future__ import annotations

import click

from qtoaster.cli.dirsupport import open_directory
from qtoaster.cli.options import home_option
from qtoaster.core.home import Home
from qtoaster.directory.store import valid_domain
from qtoaster.httpd import tokens


@click.group()
def token() -> None:
    """API tokens for the http role: add, list, del."""


@token.command("add")
@home_option
@click.option("--name", required=True, help="A name to list and delete it by.")
@click.option("--site", is_flag=True, help="Every domain, the queue and the status.")
@click.option("--domain", default=None, metavar="DOMAIN", help="One domain only.")
def token_add(home: Home, name: str, site: bool, domain: str | None) -> None:
    """Make a token and print it (once: only its hash is kept)."""
    if site == (domain is not None):
        raise click.UsageError("give --site or --domain DOMAIN")
    scope = tokens.SITE
    if domain is not None:
        with open_directory(home) as directory:
            scope = valid_domain(domain)
            if directory.domain(scope) is None:
                raise click.ClickException(f"unknown domain: {scope}")
    try:
        made = tokens.add(tokens.tokens_file(home.root), name, scope)
    except tokens.TokenError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(made)
    click.echo(f"token {name} ({scope}): shown only now; keep it secret", err=True)


@token.command("list")
@home_option
def token_list(home: Home) -> None:
    """Every token's name, scope and creation date."""
    from qtoaster.cli.dirsupport import when_text

    try:
        found = tokens.load(tokens.tokens_file(home.root))
    except tokens.TokenError as exc:
        raise click.ClickException(str(exc)) from None
    for stored in found:
        click.echo(f"{stored.name}\t{stored.scope}\t{when_text(stored.created)}")


@token.command("del")
@home_option
@click.argument("name")
def token_del(home: Home, name: str) -> None:
    """Delete the token NAME: it is refused from now on."""
    try:
        tokens.delete(tokens.tokens_file(home.root), name)
    except tokens.TokenError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"deleted token {name}")
