"""``qtoaster srs``: the key of the Sender Rewriting Scheme (docs/srs.md).

keygen makes ``HOME/secrets/srs.key`` when it is missing (``qtoaster init`` already did);
``--rotate`` puts a new signing key first and keeps the old ones, which still verify
the addresses made with them until ``[srs] max_age_days`` has passed (then remove them
with ``--drop-old``). The auth role reads the file again when it changes.

Invariant: the key file is only ever replaced atomically, mode 0600.
"""

from __future__ import annotations

import click

from qtoaster.cli.options import home_option
from qtoaster.core.home import Home
from qtoaster.mailauth.srs import key_path, new_key, read_keys, write_keys


@click.group()
def srs() -> None:
    """The SRS key: keygen (rotate, drop old keys)."""


@srs.command("keygen")
@home_option
@click.option("--rotate", is_flag=True, help="a new signing key first; the old ones still verify")
@click.option("--drop-old", is_flag=True, help="keep only the signing key")
def keygen(home: Home, rotate: bool, drop_old: bool) -> None:
    """Make the SRS key if it is missing (or rotate it)."""
    if not home.settings_file.is_file():
        raise click.ClickException(f"{home.root}: not a qtoaster home (qtoaster init?)")
    path = key_path(home)
    try:
        keys = [key.decode() for key in read_keys(path)]
    except FileNotFoundError:
        keys = []
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"{path}: unreadable: {exc}") from None
    if not keys:
        write_keys(path, [new_key()])
        click.echo(f"{path}: created")
        return
    if not rotate and not drop_old:
        click.echo(f"{path}: exists ({len(keys)} key(s)); --rotate makes a new signing key")
        return
    if rotate:
        keys.insert(0, new_key())
    if drop_old:
        keys = keys[:1]
    write_keys(path, keys)
    click.echo(f"{path}: {len(keys)} key(s), the first signs")
