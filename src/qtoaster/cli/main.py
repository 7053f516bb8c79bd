"""The ``qtoaster`` command: a thin click group over the same APIs the roles use.

Subcommands live in their own modules and are imported only when used, so
``qtoaster queue-inject`` (called once per message by scripts) starts fast.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

# command name -> "module:attribute"
COMMANDS: dict[str, str] = {
    "init": "qtoaster.cli.init:init",
    "config": "qtoaster.cli.config:config",
    "run": "qtoaster.cli.run:run",
    "serve": "qtoaster.cli.run:serve",
    "domain": "qtoaster.cli.domain:domain",
    "user": "qtoaster.cli.user:user",
    "queue": "qtoaster.cli.queue:queue",
    "queue-inject": "qtoaster.cli.inject:queue_inject",
    "sendmail": "qtoaster.cli.sendmail:sendmail",
    "alias": "qtoaster.cli.alias:alias",
    "cert": "qtoaster.cli.cert:cert",
    "dns": "qtoaster.cli.dns:dns_group",
    "dkim": "qtoaster.cli.dkim:dkim",
    "import": "qtoaster.cli.importer:import_group",
    "srs": "qtoaster.cli.srs:srs",
    "systemd": "qtoaster.cli.systemd:systemd",
    "backup": "qtoaster.cli.backup:backup",
    "restore": "qtoaster.cli.backup:restore",
    "report": "qtoaster.cli.report:report",
    "token": "qtoaster.cli.token:token",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        command: Any = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="qtoaster")
def cli() -> None:
    """qtoaster: SMTP, a durable queue, Maildir++ and virtual domains, qmail-compatible."""


def main() -> None:
    cli()
