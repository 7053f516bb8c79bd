"""``qtoaster run`` (the supervisor) and ``qtoaster serve ROLE`` (one role)."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable

import click

from qtoaster.cli.logs import setup_logging
from qtoaster.cli.options import home_option
from qtoaster.config.loader import Config, load_config
from qtoaster.config.settings import Listener, parse_listen
from qtoaster.core.errors import ConfigError
from qtoaster.core.home import Home

PR_SET_PDEATHSIG = 1


def load_or_exit(home: Home) -> Config:
    try:
        return load_config(home)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"qtoaster: {problem}", err=True)
        raise SystemExit(1)


@click.command()
@home_option
@click.option(
    "--smtp",
    "smtp",
    multiple=True,
    metavar="ADDR:PORT",
    help="SMTP listener (repeatable); replaces [listen] smtp of qtoaster.toml",
)
@click.option(
    "--workers",
    type=click.IntRange(0, 256),
    default=None,
    help="smtpd worker processes (default: [smtpd] workers, 0 = one per core)",
)
def run(home: Home, smtp: tuple[str, ...], workers: int | None) -> None:
    """Run every role: smtpd workers and the queue manager, under one supervisor."""
    from qtoaster.queue.store import QueueStore
    from qtoaster.supervisor import Supervisor

    config = load_or_exit(home)
    setup_logging(config.settings.log_level, "qtoaster")
    try:
        listeners = [parse_listen("smtp", value) for value in smtp]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--smtp")
    if not listeners:
        listeners = [lst for lst in config.settings.listeners if lst.kind == "smtp"]
    if not listeners:
        raise click.UsageError("no SMTP listener: give --smtp ADDR:PORT or set [listen] smtp")
    count = workers if workers is not None else config.settings.smtpd_workers
    count = count or os.cpu_count() or 1
    for line in QueueStore(home.queue).recover(everything=True):
        logging.getLogger("qtoaster.queue").info("%s", line)
    supervisor = Supervisor(home, listeners, count)
    try:
        supervisor.setup()
    except OSError as exc:
        raise click.ClickException(f"cannot bind listener: {exc}")
    sys.exit(asyncio.run(supervisor.run()))


@click.command()
@click.argument("role", type=click.Choice(["smtpd", "send"]))
@home_option
@click.option("--fd", "fds", type=int, multiple=True, help="inherited listening socket (smtpd)")
@click.option("--ready-fd", type=int, default=None, help="write 'ready:PID' here when ready")
@click.option("--supervised", is_flag=True, help="exit when the supervisor dies")
@click.option("--child-name", default=None, hidden=True)
def serve(
    home: Home,
    role: str,
    fds: tuple[int, ...],
    ready_fd: int | None,
    supervised: bool,
    child_name: str | None,
) -> None:
    """Run one role in the foreground (for systemd units, containers, or `run`)."""
    if supervised:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    config = load_or_exit(home)
    setup_logging(config.settings.log_level, child_name or role)

    def ready() -> None:
        if ready_fd is not None:
            os.write(ready_fd, f"ready:{os.getpid()}\n".encode())
        else:
            click.echo(f"qtoaster {role} ready", err=True)

    if role == "smtpd":
        sockets = [socket.socket(fileno=fd) for fd in fds] or _bind_own(config)
        asyncio.run(_serve_smtpd(home, sockets, ready))
    else:
        asyncio.run(_serve_send(config, ready))


def _bind_own(config: Config) -> list[socket.socket]:
    from qtoaster.supervisor import bind

    listeners: list[Listener] = [lst for lst in config.settings.listeners if lst.kind == "smtp"]
    return [bind(lst, 1)[0] for lst in listeners]


async def _serve_smtpd(home: Home, sockets: list[socket.socket], ready: Callable[[], None]) -> None:
    from qtoaster.smtpd.worker import Worker

    await Worker(home).serve(sockets, ready)


async def _serve_send(config: Config, ready: Callable[[], None]) -> None:
    from qtoaster.core.clock import SystemClock
    from qtoaster.delivery.local import LocalAgent
    from qtoaster.directory.lazy import LazyDirectory
    from qtoaster.queue.manager import QueueManager
    from qtoaster.queue.store import QueueStore

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    # Opened on first use and again after an outage: deliveries defer meanwhile.
    directory = LazyDirectory(config.home, config.settings.database_url)
    fsync = config.settings.fsync
    store = QueueStore(config.home.queue, fsync=fsync)
    agent = LocalAgent(config.home, config.controls, directory, fsync=fsync, queue=store)
    manager = QueueManager(store, config, agent, SystemClock())
    task = loop.create_task(manager.run(stop))
    ready()
    await task
    directory.close()
