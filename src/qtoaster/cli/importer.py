"""``qtoaster import vpopmail``: bring a vpopmail installation over (domains, users with
their crypt(3) hashes, aliases, quotas, Maildirs).

Invariants: the source is never modified (files are opened read-only, mail is copied);
``--dry-run`` changes nothing and prints the same report; exit status 0 when everything
was imported or already there, 1 when something was skipped with an error (or the
directory/database failed), 2 for bad usage.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import click

from qtoaster.cli.options import home_option
from qtoaster.core.errors import QtoasterError
from qtoaster.core.home import Home
from qtoaster.directory.store import Directory
from qtoaster.importer.apply import Report, apply_plan
from qtoaster.importer.mysqldump import DumpError, DumpTable, parse_dump
from qtoaster.importer.vpopmail import read_installation

# The tables vpopmail's MySQL backend keeps (vmysql.h); old installations add one table
# per domain, recognised by their pw_name column.
_VPOPMAIL_TABLES = ("vpopmail", "valias", "aliasdomains")


def read_mysql(url: str) -> dict[str, DumpTable]:
    """The vpopmail tables of ``mysql://user:password@host[:port]/db[?unix_socket=PATH]``,
    read with PyMySQL (SELECT only)."""
    import pymysql  # only for --mysql

    parts = urlsplit(url)
    if parts.scheme != "mysql" or not parts.path.strip("/"):
        raise click.UsageError("--mysql takes mysql://user:password@host[:port]/database")
    socket = parse_qs(parts.query).get("unix_socket", [None])[0]
    try:
        conn = pymysql.connect(
            host=parts.hostname or "localhost",
            port=parts.port or 3306,
            user=unquote(parts.username or ""),
            password=unquote(parts.password or ""),
            database=unquote(parts.path.strip("/")),
            unix_socket=socket,
            charset="utf8mb4",
        )
    except pymysql.MySQLError as exc:
        raise click.ClickException(f"cannot connect to MySQL: {exc}") from exc
    try:
        return _tables(conn)
    except pymysql.MySQLError as exc:
        raise click.ClickException(f"MySQL error: {exc}") from exc
    finally:
        conn.close()


def _tables(conn: object) -> dict[str, DumpTable]:
    tables: dict[str, DumpTable] = {}
    with conn.cursor() as cursor:  # type: ignore[attr-defined]
        cursor.execute("SHOW TABLES")
        names = [str(row[0]) for row in cursor.fetchall()]
        for name in names:
            quoted = "`" + name.replace("`", "``") + "`"
            cursor.execute(f"SELECT * FROM {quoted}")
            columns = [str(column[0]) for column in cursor.description]
            if name not in _VPOPMAIL_TABLES and "pw_name" not in columns:
                continue
            table = tables[name] = DumpTable(name, columns)
            for row in cursor.fetchall():
                values = [
                    v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else v for v in row
                ]
                table.rows.append(dict(zip(columns, values, strict=True)))
    return tables


def _read_dump(path: Path) -> dict[str, DumpTable]:
    try:
        return parse_dump(path.read_text("utf-8", "surrogateescape"))
    except (DumpError, OSError) as exc:
        raise click.ClickException(f"{path}: {exc}") from exc


def _database_url(home: Home) -> str | None:
    if not home.settings_file.exists():
        return None
    from qtoaster.config.settings import load_settings

    return load_settings(home.settings_file).database_url


def _add_rcpthosts(home: Home, report: Report, aliases: Mapping[str, list[str]]) -> None:
    # As vadddomain (spec 22): a hosted domain is listed in control/rcpthosts, or mail to
    # it is refused at RCPT.  Reuses the domain command's atomic editor.
    from qtoaster.cli.controlfiles import edit_rcpthosts

    for name in sorted(report.domains):
        for hosted in [name, *aliases.get(name, [])]:
            edit_rcpthosts(home, add=hosted)


@click.group("import")
def import_group() -> None:
    """Import domains, users and mail from another mail system."""


@import_group.command("vpopmail")
@home_option
@click.argument("source", type=click.Path(file_okay=False, path_type=Path))
@click.option("--assign", type=click.Path(dir_okay=False, path_type=Path), help="users/assign")
@click.option("--mysql-dump", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE")
@click.option("--mysql", "mysql_url", metavar="URL", help="mysql://user:pw@host[:port]/db")
@click.option("--dry-run", is_flag=True, help="Print the report; change nothing.")
@click.option("--domain", "only", multiple=True, metavar="D", help="Only this domain (repeat).")
@click.option("--no-mail", is_flag=True, help="Do not copy the Maildirs.")
def vpopmail(
    home: Home,
    source: Path,
    assign: Path | None,
    mysql_dump: Path | None,
    mysql_url: str | None,
    dry_run: bool,
    only: tuple[str, ...],
    no_mail: bool,
) -> None:
    """Import the vpopmail installation in SOURCE (the directory holding domains/)."""
    if not (source / "domains").is_dir():
        raise click.UsageError(f"{source} has no domains/ directory (give ~vpopmail)")
    if mysql_dump is not None and mysql_url is not None:
        raise click.UsageError("give --mysql-dump or --mysql, not both")
    for given in (assign, mysql_dump):
        if given is not None and not given.is_file():
            raise click.UsageError(f"no such file: {given}")
    tables = _read_dump(mysql_dump) if mysql_dump is not None else None
    if mysql_url is not None:
        tables = read_mysql(mysql_url)
    plan = read_installation(source, assign=assign, tables=tables, only=only)
    directory: Directory | None = None
    try:
        if not dry_run or home.database.exists() or home.settings_file.exists():
            from qtoaster.cli.dirsupport import credentials_url

            directory = Directory.open(
                home, _database_url(home), credentials_url=credentials_url(home)
            )
        report = apply_plan(
            plan,
            directory,
            home,
            dry_run=dry_run,
            copy_mail=not no_mail,
            progress=lambda line: click.echo(line, err=True),
        )
        if not dry_run:
            _add_rcpthosts(home, report, {d.name: d.alias_domains for d in plan.domains})
    except (QtoasterError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        if directory is not None:
            directory.close()
    for line in report.lines():
        click.echo(line)
    if report.failed:
        raise SystemExit(1)
