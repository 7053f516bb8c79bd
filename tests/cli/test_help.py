"""Every help text names only real commands (issue 16: `user ... delete, change` drifted).

The top-level help's command list is parsed back and each name resolved; a group whose
help lists its subcommands ("Mailbox users: add, del, ...") lists exactly the real ones.
"""

from __future__ import annotations

import re

import click
from click.testing import CliRunner

from qtoaster.cli.main import COMMANDS, cli


def _top_level_names() -> list[str]:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0, result.output
    _, _, commands = result.output.partition("\nCommands:\n")
    assert commands, result.output
    return [line.split()[0] for line in commands.splitlines() if line.startswith("  ")]


def _listed_subcommands(group: click.Group) -> list[str] | None:
    """The names a group's help lists after its first colon, or None if it lists none."""
    first_line = (group.help or "").strip().splitlines()[0]
    _, colon, rest = first_line.partition(": ")
    if not colon:
        return None
    rest = re.sub(r"\([^)]*\)", "", rest).strip().rstrip(".")
    names = [name.strip() for name in rest.split(",")]
    if not all(re.fullmatch(r"[a-z][a-z-]*", name) for name in names):
        return None  # prose after the colon, not a list of commands
    return names


def test_top_level_help_names_only_real_commands() -> None:
    names = _top_level_names()
    assert sorted(names) == sorted(COMMANDS)
    ctx = click.Context(cli)
    for name in names:
        assert isinstance(cli.get_command(ctx, name), click.Command), name


def test_group_helps_list_exactly_their_subcommands() -> None:
    ctx = click.Context(cli)
    checked = 0
    for name in _top_level_names():
        command = cli.get_command(ctx, name)
        if not isinstance(command, click.Group):
            continue
        listed = _listed_subcommands(command)
        if listed is None:
            continue
        checked += 1
        assert sorted(listed) == sorted(command.commands), (name, listed)
    assert checked >= 5  # user, domain, alias, dkim, cert, srs: the test must see them


def test_group_help_output_lists_real_subcommands() -> None:
    # `qtoaster user --help` itself: every name under Commands resolves.
    ctx = click.Context(cli)
    for name in _top_level_names():
        command = cli.get_command(ctx, name)
        if not isinstance(command, click.Group):
            continue
        result = CliRunner().invoke(cli, [name, "--help"])
        assert result.exit_code == 0, result.output
        _, _, section = result.output.partition("\nCommands:\n")
        shown = [line.split()[0] for line in section.splitlines() if line.startswith("  ")]
        assert sorted(shown) == sorted(command.commands), name
