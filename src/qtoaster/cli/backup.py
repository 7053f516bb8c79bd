"""``qtoaster backup DEST`` and ``qtoaster restore SRC``: thin commands over
qtoaster.backup (docs/backup.md). Errors are one ``qtoaster: ...`` message, exit 1."""

from __future__ import annotations

from pathlib import Path

import click

from qtoaster.cli.options import home_option, provision
from qtoaster.core.errors import ConfigError
from qtoaster.core.home import Home


@click.command()
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@home_option
@click.option("--dry-run", is_flag=True, help="list what would be copied or linked; copy nothing")
@click.option(
    "--pause-timeout",
    type=click.FloatRange(1.0, 86400.0),
    default=300.0,
    show_default=True,
    help="seconds to wait for deliveries in flight to finish before copying",
)
def backup(home: Home, dest: Path, dry_run: bool, pause_timeout: float) -> None:
    """Copy the home into a new snapshot DEST/NAME, while the server runs.

    Takes settings, control/, tcp rules, keys and secrets, the directory (SQLite's online
    backup, or pg_dump for PostgreSQL), the queue and the Maildirs; local deliveries pause
    while the queue and the Maildirs are copied (mail is still accepted). Files unchanged
    since the previous snapshot in DEST are hard links to it. Restore with qtoaster
    restore DEST --home NEWHOME.
    """
    from qtoaster.backup.database import BackupError
    from qtoaster.backup.snapshot import backup as run_backup
    from qtoaster.config.settings import load_settings

    try:
        settings = load_settings(home.settings_file)
        report = run_backup(
            home,
            dest,
            database_url=settings.database_url,
            credentials_url=settings.credentials_url,
            dry_run=dry_run,
            pause_timeout=pause_timeout,
        )
    except ConfigError as exc:
        raise click.ClickException("; ".join(exc.problems)) from None
    except (BackupError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    for line in report.would:
        click.echo(line)
    for rel in report.skipped:
        click.echo(f"skipped {rel} (not a regular file or directory)", err=True)
    verb = "would make" if dry_run else "made"
    click.echo(
        f"{verb} snapshot {report.name}: {report.files} files, {report.copied} copied"
        f" ({report.bytes_copied} bytes), {report.linked} linked to the previous snapshot"
    )
    if report.how:
        click.echo(f"consistency: {report.how}")


@click.command()
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@home_option
@click.option(
    "--snapshot", "name", metavar="NAME", help="restore this snapshot (default: the latest)"
)
@click.option("--dry-run", is_flag=True, help="list what would change in the home; change nothing")
def restore(home: Home, src: Path, name: str | None, dry_run: bool) -> None:
    """Bring a backup made by qtoaster backup back into --home (e.g. on a new machine).

    The snapshot's checksums are verified first (a damaged backup is refused, exit 1).
    The home then holds exactly the snapshot's files (others a backup would take are
    removed); paths naming the old home are moved below the new one; PostgreSQL dumps
    are loaded into the databases qtoaster.toml names; as root, the roles' users own
    their parts again. The server must not run on the home.
    """
    from qtoaster.backup.database import BackupError
    from qtoaster.backup.restore import restore as run_restore

    try:
        out = run_restore(src, home, name=name, dry_run=dry_run)
    except (BackupError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    for change in out.changes:
        click.echo(f"{change.action} {change.path}")
    for rel in out.rewrites:
        click.echo(f"rewrite {rel}: {out.manifest.home} -> {home.root}")
    for line in out.database:
        click.echo(f"load {line}")
    counts = {a: sum(c.action == a for c in out.changes) for a in ("add", "replace", "remove")}
    verb = "would restore" if dry_run else "restored"
    click.echo(
        f"{verb} snapshot {out.snapshot.name} into {home.root}: {counts['add']} added,"
        f" {counts['replace']} replaced, {counts['remove']} removed"
    )
    if not dry_run:
        if out.maildirs:
            click.echo(f"{out.maildirs} Maildir paths made relative to the home")
        _owners(home)


def _owners(home: Home) -> None:
    """As root, as init does: the roles' accounts exist and own their part of the home."""
    from qtoaster.config.settings import load_settings
    from qtoaster.core.privilege import running_as_root
    from qtoaster.supervisor import ownership

    if not running_as_root():
        return
    try:
        made, _ = provision(home)
    except ConfigError as exc:
        raise click.ClickException("; ".join(exc.problems)) from None
    for line in made:
        click.echo(f"created {line}")
    ownership.own_queue_files(home, load_settings(home.settings_file).users)
