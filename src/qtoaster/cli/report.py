"""``qtoaster report LOGFILE...``: what the log says happened (docs/logging.md)."""

from __future__ import annotations

import gzip
import json
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import IO, BinaryIO, cast

import click

from qtoaster.report.render import render
from qtoaster.report.summary import Summary


def _when(text: str, option: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"not an ISO 8601 time: {text!r}", param_hint=option)
    return when.astimezone() if when.tzinfo is None else when  # no zone: local time


def _lines(name: str) -> Iterator[str]:
    stream: BinaryIO
    if name == "-":
        stream = sys.stdin.buffer
    else:
        try:
            stream = open(name, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise click.ClickException(f"cannot read {name}: {exc.strerror or exc}")
    try:
        magic = stream.peek(2)[:2] if hasattr(stream, "peek") else b""
        reader: IO[bytes] = stream
        if magic == b"\x1f\x8b":
            reader = cast(IO[bytes], gzip.GzipFile(fileobj=stream))
        try:
            for raw in reader:
                yield raw.rstrip(b"\n").decode("utf-8", errors="replace")
        except (OSError, EOFError) as exc:  # a damaged .gz: what was read counts
            click.echo(f"qtoaster report: {name}: {exc}", err=True)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


@click.command()
@click.argument("logfiles", nargs=-1, required=True)
@click.option("--since", help="only lines at or after this ISO 8601 time (no zone: local)")
@click.option("--until", help="only lines before this ISO 8601 time (no zone: local)")
@click.option("--day", help="only lines of this local day, YYYY-MM-DD")
@click.option(
    "--top",
    default=10,
    show_default=True,
    type=click.IntRange(0, 10000),
    help="entries in the top senders, recipients and client addresses",
)
@click.option("--json", "as_json", is_flag=True, help="the figures as one JSON object")
def report(
    logfiles: tuple[str, ...],
    since: str | None,
    until: str | None,
    day: str | None,
    top: int,
    as_json: bool,
) -> None:
    """Sum up LOGFILE... (qtoaster's log; '-' is stdin; .gz files are read too):
    messages received, delivered, bounced, deferred, rejected by reason, top senders,
    recipients and clients, delays, TLS share, logins.

    Lines that are not qtoaster log lines are counted and skipped. Lines without a time
    (journald's export) are never left out by --since, --until or --day.
    """
    summary = Summary()
    if day is not None:
        if since is not None or until is not None:
            raise click.UsageError("--day or --since/--until, not both")
        start = _when(day, "--day")
        if len(day) != 10:
            raise click.BadParameter(f"not a day YYYY-MM-DD: {day!r}", param_hint="--day")
        summary.since, summary.until = start, start + timedelta(days=1)
    if since is not None:
        summary.since = _when(since, "--since")
    if until is not None:
        summary.until = _when(until, "--until")
    for name in logfiles:
        for text in _lines(name):
            summary.add_text(text)
    figures = summary.as_dict(top)
    if as_json:
        click.echo(json.dumps(figures, indent=2))
    else:
        click.echo(render(figures), nl=False)
