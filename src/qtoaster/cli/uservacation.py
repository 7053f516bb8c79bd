"""``qtoaster user vacation``: a user's autoresponder (qmailadmin's vacation), and the
texts ``user show`` prints for it and for the spam folder choice (docs/vacation.md).

Dates are UTC: ``--start 2024-08-01`` starts at 00:00 UTC that day, ``--end 2024-08-31``
answers until the end of that day (00:00 UTC the next day); an ISO time with an offset
(``2024-08-01T09:00+02:00``) is taken as it is.
"""

from __future__ import annotations

import re
import sys
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import IO

import click

from qtoaster.cli.dirsupport import open_directory, when_text
from qtoaster.cli.options import home_option
from qtoaster.core.home import Home
from qtoaster.directory.model import DAY, VACATION_PERIOD, Vacation

_PERIOD = re.compile(r"^(\d+)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": DAY}


def parse_period(text: str) -> int:
    """``7d``, ``12h``, ``30m``, ``3600s`` or ``3600`` -> seconds."""
    found = _PERIOD.match(text.strip().lower())
    if found is None:
        raise click.BadParameter(f"{text!r} is no period: use e.g. 7d, 12h, 30m")
    return int(found.group(1)) * _UNITS[found.group(2)]


def parse_when(text: str, *, end: bool) -> int:
    """A date (UTC day; an end date includes its day) or an ISO time -> Unix seconds."""
    try:
        if len(text.strip()) == 10:
            day = date.fromisoformat(text.strip())
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return int((start + timedelta(days=1 if end else 0)).timestamp())
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r} is no date: use YYYY-MM-DD") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def period_text(seconds: int) -> str:
    for unit, size in (("d", DAY), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def vacation_text(vacation: Vacation | None) -> str:
    if vacation is None:
        return "off"
    state = "on" if vacation.enabled else "off"
    subject = vacation.subject or "Auto: <their subject>"
    text = f"{state}, subject {subject!r}, once per sender per {period_text(vacation.period)}"
    if vacation.starts is not None:
        text += f", from {when_text(vacation.starts)}"
    if vacation.ends is not None:
        text += f", until {when_text(vacation.ends)}"
    return text


def spam_folder_text(junk_spam: bool) -> str:
    return "junk (marked spam goes to .Junk)" if junk_spam else "inbox"


@click.command("vacation")
@home_option
@click.argument("address")
@click.option("--subject", default=None, help='The reply\'s subject (default: "Auto: " + theirs).')
@click.option(
    "--message-file",
    type=click.File("r", encoding="utf-8"),
    default=None,
    metavar="FILE",
    help="The reply's text (UTF-8).",
)
@click.option("--message-stdin", is_flag=True, help="Read the reply's text from stdin.")
@click.option("--start", default=None, metavar="DATE", help="First day answered (YYYY-MM-DD).")
@click.option("--end", default=None, metavar="DATE", help="Last day answered (YYYY-MM-DD).")
@click.option("--period", default=None, metavar="N[smhd]", help="One reply per sender per (7d).")
@click.option("--off", is_flag=True, help="Stop answering (the text is kept).")
def user_vacation(
    home: Home,
    address: str,
    subject: str | None,
    message_file: IO[str] | None,
    message_stdin: bool,
    start: str | None,
    end: str | None,
    period: str | None,
    off: bool,
) -> None:
    """Answer mail to ADDRESS while its user is away (RFC 3834), or --off."""
    given = (subject, message_file, start, end, period)
    with open_directory(home) as directory:
        if off:
            if message_stdin or any(v is not None for v in given):
                raise click.UsageError("--off takes no other option")
            found = directory.vacation_off(address)
            click.echo(f"{address.lower()}: vacation {vacation_text(found)}")
            return
        if message_file is not None and message_stdin:
            raise click.UsageError("give --message-file or --message-stdin, not both")
        current = directory.vacation(address)
        body = None
        if message_file is not None:
            body = message_file.read()
        elif message_stdin:
            body = sys.stdin.read()
        if body is None and current is None:
            raise click.UsageError("give the reply's text: --message-file FILE or --message-stdin")
        base = current or Vacation(True, "", "")
        vacation = replace(
            base,
            enabled=True,
            subject=base.subject if subject is None else subject,
            body=base.body if body is None else body,
            starts=base.starts if start is None else parse_when(start, end=False),
            ends=base.ends if end is None else parse_when(end, end=True),
            period=(base.period or VACATION_PERIOD) if period is None else parse_period(period),
        )
        directory.set_vacation(address, vacation)
    click.echo(f"{address.lower()}: vacation {vacation_text(vacation)}")
