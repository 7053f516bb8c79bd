"""Options shared by every subcommand."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from qtoaster.core.home import Home

F = TypeVar("F", bound=Callable[..., Any])


def home_option(func: F) -> F:
    """``--home DIR`` (default ``$QTOASTER_HOME``, else ``./qtoaster-home``), passed as a Home."""

    def convert(ctx: click.Context, param: click.Parameter, value: str | None) -> Home:
        return Home.resolve(value)

    return click.option(
        "--home",
        "home",
        default=None,
        callback=convert,
        metavar="DIR",
        help="qtoaster home (default: $QTOASTER_HOME, else ./qtoaster-home)",
    )(func)
