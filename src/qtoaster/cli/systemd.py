"""``qtoaster systemd install``: the systemd unit that runs ``qtoaster run`` for a home,
and the service and timer that run ``qtoaster cert acme`` twice a day.

Each unit is ``templates/NAME.in`` filled in (string.Template): the Python
that runs now and the home (``--home``/``$QTOASTER_HOME``), quoted for a unit file.
The sandbox fits the security model (docs/security.md, docs/systemd.md): the supervisor
starts as root and each role drops to its user, so the bounding set keeps what that
takes (:data:`CAPABILITIES`).

Invariant: nothing is written with ``--dry-run``; otherwise only ``DIR/qtoaster.service``
and the two units of :data:`RENEW_UNITS` (each replaced atomically: a temporary file
renamed over it).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from string import Template

import click

from qtoaster.cli.options import home_option
from qtoaster.core.home import Home

UNIT = "qtoaster.service"
# `qtoaster cert acme` twice a day (docs/tls.md "ACME"): a oneshot service and its timer
RENEW_UNITS = ("qtoaster-cert-renew.service", "qtoaster-cert-renew.timer")
DEFAULT_DIR = "/etc/systemd/system"

# What the code run as root uses (supervisor/, core/privilege.py, cli/run.py):
CAPABILITIES = (
    "CAP_NET_BIND_SERVICE",  # listeners on ports below 1024 (supervisor.runner.bind)
    "CAP_SETUID",  # core.privilege.drop: setresuid to the role's user
    "CAP_SETGID",  # ... setgroups and setresgid
    "CAP_CHOWN",  # owners of the home (supervisor.ownership), the listeners' owner uid
    "CAP_FOWNER",  # modes of files the roles own (ownership.apply's chmod)
    "CAP_DAC_OVERRIDE",  # root reads and writes the roles' files (queue, Maildirs, run/)
    "CAP_KILL",  # signals to the roles, which run as other users (SIGHUP, SIGTERM)
)
# Per process: each worker raises its soft limit to its share of max_connections (2 files
# per connection, net.limits); the kernel's default ceiling (fs.nr_open) is 1048576.
LIMIT_NOFILE = 1048576
PRIVATE_TOPS = ("/home", "/root")


@dataclass(frozen=True, slots=True)
class Unit:
    text: str
    notes: list[str]  # what the operator should know (ProtectHome relaxed...)


def quote(arg: str) -> str:
    """One word of a unit file's command line or path list: % and $ doubled (specifiers,
    variables), and double quotes, with backslash escapes, around anything unusual."""
    text = arg.replace("%", "%%").replace("$", "$$")
    if text and all(c.isalnum() or c in "/._-+:@,=" for c in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _under_private(path: str) -> str | None:
    for top in PRIVATE_TOPS:
        if path == top or path.startswith(top + "/"):
            return top
    return None


def render(home: Home, command: str, python: str | None = None, name: str = UNIT) -> Unit:
    """The unit *name* (qtoaster.service or one of :data:`RENEW_UNITS`) for ``home``;
    ValueError for a path a unit file cannot hold."""
    python = python or sys.executable
    root = str(home.root)
    for path in (root, python):
        if any(ord(c) < 32 or ord(c) == 127 for c in path):
            raise ValueError(f"{path!r}: a control character cannot go in a unit file")
    package = str(Path(__file__).resolve().parents[1])
    checked = {
        "the home": str(home.root),
        "Python": python,
        "Python's real path": os.path.realpath(python),
        "the environment (sys.prefix)": sys.prefix,
        "the qtoaster package": package,
    }
    private = [(what, path) for what, path in checked.items() if _under_private(path)]
    notes: list[str] = []
    protect_home = "yes"
    if private:
        # read-only keeps /home and /root readable; ReadWritePaths= still makes the home
        # writable when it lives there.
        protect_home = "read-only"
        where = "; ".join(f"{what} {path}" for what, path in private)
        notes.append(
            f"ProtectHome=read-only, not yes: {where} under /home or /root; the roles "
            "must also be able to enter it (docs/security.md)"
        )
    try:
        release = version("qtoaster")
    except PackageNotFoundError:
        release = "unknown"
    template = resources.files("qtoaster.cli").joinpath("templates", f"{name}.in").read_text()
    args = ("run", "--home", root) if name == UNIT else ("cert", "acme", "--home", root)
    text = Template(template).substitute(
        command=command,
        version=release,
        notes="".join(f"# Note: {note}\n" for note in notes),
        exec_start=" ".join(quote(a) for a in (python, "-m", "qtoaster", *args)),
        home=quote(root),
        protect_home=protect_home,
        capabilities=" ".join(CAPABILITIES),
        limit_nofile=LIMIT_NOFILE,
    )
    return Unit(text, notes)


@click.group()
def systemd() -> None:
    """systemd integration: the unit that runs `qtoaster run`, the certificate's renewal."""


@systemd.command()
@home_option
@click.option(
    "--dir",
    "directory",
    default=DEFAULT_DIR,
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="where the units are written",
)
@click.option("--dry-run", is_flag=True, help="print the unit instead of writing it")
def install(home: Home, directory: Path, dry_run: bool) -> None:
    """Write qtoaster.service: `qtoaster run --home HOME` as a Type=notify service, sandboxed
    (ProtectSystem=strict, the home writable, the capabilities the supervisor uses); and
    qtoaster-cert-renew.service and .timer: `qtoaster cert acme` twice a day."""
    command = f"qtoaster systemd install --home {home.root}"
    if directory != Path(DEFAULT_DIR):
        command += f" --dir {directory}"
    try:
        units = {name: render(home, command, name=name) for name in (UNIT, *RENEW_UNITS)}
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    notes = units[UNIT].notes
    if dry_run:
        for name, unit in units.items():
            if name != UNIT:
                click.echo(f"\n# ---- {name} ----")
            click.echo(unit.text, nl=False)
        for note in notes:
            click.echo(f"note: {note}", err=True)
        return
    if not home.settings_file.is_file():
        click.echo(
            f"note: {home.root} has no qtoaster.toml yet: run `qtoaster init` first", err=True
        )
    directory.mkdir(parents=True, exist_ok=True)
    for name, unit in units.items():
        target = directory / name
        tmp = target.with_name(f".{name}.tmp")
        tmp.write_text(unit.text)
        tmp.chmod(0o644)
        os.replace(tmp, target)
        click.echo(f"wrote {target}")
    for note in notes:
        click.echo(f"note: {note}")
    click.echo("next: systemctl daemon-reload && systemctl enable --now qtoaster")
    click.echo(
        "with a certificate from `qtoaster cert acme`: systemctl enable --now "
        "qtoaster-cert-renew.timer"
    )
