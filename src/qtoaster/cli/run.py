"""``qtoaster run`` (the supervisor) and ``qtoaster serve ROLE`` (one role).

Before anything touches the home, ``run`` takes the home's lock and ``serve send`` the
queue manager's (core.lock: one server per home, one queue manager per queue); ``run``
then refuses a bad server certificate and an address it cannot have to itself
(supervisor.check, supervisor.runner.bind), each with one ``qtoaster: ...`` line, exit 1.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from qtoaster.cli.logs import setup_logging
from qtoaster.cli.options import home_option
from qtoaster.config.loader import Config, load_config
from qtoaster.config.settings import IMAP_KINDS, POP3_KINDS, SMTPD_KINDS, Listener, parse_listen
from qtoaster.core.errors import ConfigError
from qtoaster.core.home import Home
from qtoaster.core.lock import QUEUE_MANAGER, SUPERVISOR, HomeLock, Locked

if TYPE_CHECKING:
    from pathlib import Path

    from qtoaster.config.settings import Settings
    from qtoaster.send.remoteclient import RemoteClient
    from qtoaster.supervisor.runner import Supervisor

PR_SET_PDEATHSIG = 1
F = TypeVar("F", bound=Callable[..., Any])


def load_or_exit(home: Home) -> Config:
    try:
        return load_config(home)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"qtoaster: {problem}", err=True)
        raise SystemExit(1)


def _listen_option(kind: str, what: str) -> Callable[[F], F]:
    return click.option(
        f"--{kind}",
        kind,
        multiple=True,
        metavar="ADDR:PORT",
        help=f"{what} listener (repeatable); replaces [listen] {kind} of qtoaster.toml",
    )


@click.command()
@home_option
@_listen_option("smtp", "SMTP")
@_listen_option("submission", "submission (AUTH required)")
@_listen_option("smtps", "SMTPS (implicit TLS)")
@_listen_option("pop3", "POP3")
@_listen_option("pop3s", "POP3S (implicit TLS)")
@_listen_option("imap", "IMAP")
@_listen_option("imaps", "IMAPS (implicit TLS)")
@click.option(
    "--workers",
    type=click.IntRange(0, 256),
    default=None,
    help="smtpd worker processes (default: [smtpd] workers, 0 = one per core)",
)
@click.option(
    "--metrics",
    "metrics",
    default=None,
    metavar="ADDR:PORT",
    help="serve Prometheus metrics at http://ADDR:PORT/metrics (a bare PORT: 127.0.0.1);"
    " replaces [listen] metrics of qtoaster.toml (docs/metrics.md)",
)
@click.option(
    "--http",
    "http",
    default=None,
    metavar="ADDR:PORT",
    help="serve the web admin and API at https://ADDR:PORT/api/v1 (a bare PORT: 127.0.0.1);"
    " replaces [listen] http of qtoaster.toml (docs/http.md)",
)
def run(
    home: Home,
    smtp: tuple[str, ...],
    submission: tuple[str, ...],
    smtps: tuple[str, ...],
    pop3: tuple[str, ...],
    pop3s: tuple[str, ...],
    imap: tuple[str, ...],
    imaps: tuple[str, ...],
    workers: int | None,
    metrics: str | None,
    http: str | None,
) -> None:
    """Run every role: smtpd, pop3d and imapd workers and the queue manager, under one
    supervisor."""
    from qtoaster.queue.store import QueueStore
    from qtoaster.supervisor.check import check_startup, check_warnings
    from qtoaster.supervisor.runner import ListenError, Supervisor

    config = load_or_exit(home)
    setup_logging(config.settings.log_level, "qtoaster")
    listeners: list[Listener] = []
    flags = {
        "smtp": smtp,
        "submission": submission,
        "smtps": smtps,
        "pop3": pop3,
        "pop3s": pop3s,
        "imap": imap,
        "imaps": imaps,
    }
    for kind, values in flags.items():
        try:
            parsed = [parse_listen(kind, value) for value in values]
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint=f"--{kind}")
        # A flag replaces that kind's [listen] entry; kinds without a flag keep theirs.
        listeners += parsed or [lst for lst in config.settings.listeners if lst.kind == kind]
    if not listeners:
        raise click.UsageError(
            "no listener: give --smtp ADDR:PORT (or --submission, --smtps, --pop3, --pop3s,"
            " --imap, --imaps)"
            " or set [listen] smtp"
        )
    metrics_listener = _metrics_listener(config, metrics)
    http_listener = _http_listener(config, http)
    count = workers if workers is not None else config.settings.smtpd_workers
    cores = os.cpu_count() or 1
    count = count or cores
    # POP3 sessions are long and SO_REUSEPORT spreads them by hash, unevenly: with more
    # processes than cores the CPU scheduler evens the load out (20 downloads at once:
    # 1.23 s with one pop3d per core, 0.90 s with two).
    pop3d = config.settings.pop3d_workers or 2 * cores
    imapd = config.settings.imapd.workers or 2 * cores  # long sessions too, as pop3d's
    # One server per home: held until this process ends (kill -9 included), taken before
    # anything touches the queue.
    lock = HomeLock(home.run_dir, SUPERVISOR)
    try:
        lock.acquire("qtoaster run")
    except Locked as exc:
        _fail(str(exc))
    manager = HomeLock(home.run_dir, QUEUE_MANAGER).held_elsewhere()
    if manager is not None:  # a `qtoaster serve send` of its own
        by = f" (pid {manager})" if manager else ""
        _fail(f"the queue manager is already running on {home.root}{by}")
    problems = check_startup(home)
    if problems:
        _fail(*problems, "not starting: fix the certificate (docs/tls.md)")
    _srs_key(config)  # before the warnings, which would name it missing
    for warning in check_warnings(home):
        logging.getLogger("qtoaster.supervisor").warning("supervisor %s", warning)
    for line in QueueStore(home.queue).recover(everything=True):
        logging.getLogger("qtoaster.queue").info("supervisor recover: %s", line)
    _prepare_home(config, metrics=metrics_listener is not None, http=http_listener is not None)
    if metrics_listener is not None:
        _prepare_metrics(config)
    supervisor = Supervisor(home, listeners, count, pop3d, imapd, metrics_listener, http_listener)
    try:
        supervisor.setup()
    except ListenError as exc:
        _fail(str(exc))
    if config.settings.log_file is None:
        sys.exit(asyncio.run(supervisor.run()))
    sys.exit(_run_with_log_file(supervisor, home.root / config.settings.log_file, config.settings))


def _run_with_log_file(supervisor: Supervisor, path: Path, settings: Settings) -> int:
    """[log] file: our stderr, and so every role's, becomes the pipe to the log file
    (supervisor.logfile); the terminal's stderr is given back at the end."""
    from qtoaster.supervisor.logfile import LogFile

    try:
        logfile = LogFile(str(path), settings.log_max_bytes, settings.log_keep)
    except OSError as exc:
        _fail(f"cannot open the log file {path}: {exc.strerror or exc}")
    saved = os.dup(2)
    sys.stderr.flush()
    os.dup2(logfile.write_fd, 2)
    logfile.start()
    try:
        return asyncio.run(supervisor.run())
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        logfile.close()


def _metrics_listener(config: Config, flag: str | None) -> Listener | None:
    """``--metrics`` (which replaces ``[listen] metrics``), else the setting, else None."""
    from qtoaster.config.settings import parse_metrics_listen

    if flag is None:
        return config.settings.metrics_listen
    try:
        return parse_metrics_listen(flag)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--metrics") from None


def _http_listener(config: Config, flag: str | None) -> Listener | None:
    """``--http`` (which replaces ``[listen] http``), else the setting, else None; plain
    HTTP ([http] plain) only on loopback, HTTPS needs the server certificate."""
    from qtoaster.config.httpsettings import plain_allowed
    from qtoaster.config.settings import parse_http_listen

    listener = config.settings.http_listen
    if flag is not None:
        try:
            listener = parse_http_listen(flag)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--http") from None
    if listener is None:
        return None
    if config.settings.http.plain and not plain_allowed(listener.host):
        _fail(f"[http] plain = true: only on a loopback address, not {listener.host}")
    if not config.settings.http.plain and not (config.home.control / "servercert.pem").is_file():
        _fail("the http role serves HTTPS with control/servercert.pem: there is none (docs/tls.md)")
    return listener


def _prepare_metrics(config: Config) -> None:
    from qtoaster.core.privilege import running_as_root
    from qtoaster.supervisor.metricsdirs import prepare

    prepare(config.home, config.settings.users if running_as_root() else None)


def _fail(*lines: str) -> NoReturn:
    for line in lines:
        click.echo(f"qtoaster: {line}", err=True)
    raise SystemExit(1)


@click.command()
@click.argument(
    "role",
    type=click.Choice(
        [
            "auth",
            "mailbox",
            "smtpd",
            "pop3d",
            "imapd",
            "send",
            "remote",
            "metrics",
            "http",
        ]
    ),
)
@home_option
@click.option(
    "--fd",
    "fds",
    multiple=True,
    metavar="[KIND:]FD",
    help="inherited listening socket; KIND smtp (default), submission, smtps, pop3, pop3s,"
    " imap, imaps, metrics, http",
)
@click.option("--ready-fd", type=int, default=None, help="write 'ready:PID' here when ready")
@click.option(
    "--channel-fd",
    type=int,
    default=None,
    hidden=True,
    help="remote: the socket of the role that started it",
)
@click.option("--supervised", is_flag=True, help="exit when the supervisor dies")
@click.option("--child-name", default=None, hidden=True)
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    default=1,
    help="workers of ROLE serving these listeners: each keeps its share of max_connections",
)
def serve(
    home: Home,
    role: str,
    fds: tuple[str, ...],
    ready_fd: int | None,
    channel_fd: int | None,
    supervised: bool,
    child_name: str | None,
    workers: int,
) -> None:
    """Run one role in the foreground (what `run` starts; alone, e.g. in a container).

    Under systemd use `qtoaster systemd install`: its unit runs `run`, which notifies.
    """
    if supervised:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    config = load_or_exit(home)
    setup_logging(config.settings.log_level, child_name or role)
    remote = None
    if role == "send":
        # Two queue managers on one queue would deliver every message twice. Taken before
        # root is dropped (run/ is root's); the open lock stays held by this process.
        lock = HomeLock(home.run_dir, QUEUE_MANAGER)
        try:
            lock.acquire("the queue manager")
        except Locked as exc:
            _fail(str(exc))
        remote = _remote_child(config)  # started as its user while this is still root
    # the http role's executor: forked before the drop and the HTTP imports (decision 0025)
    executor = _http_executor(home) if role == "http" else None
    peer_uids = _peer_uids(config)  # looked up while the account database is readable
    _become(config, role, announce=not supervised)

    def ready() -> None:
        if ready_fd is not None:
            os.write(ready_fd, f"ready:{os.getpid()}\n".encode())
        else:
            click.echo(f"qtoaster {role} ready", err=True)

    if role in ("smtpd", "pop3d", "imapd", "send"):
        from qtoaster.metrics.files import start

        start(role)  # as the role's user: its metrics files (with --metrics) are its own
    if role in _WORKER_ROLES:
        kinds, serve_role = _WORKER_ROLES[role]
        sockets = [_inherited(value, kinds) for value in fds] or _bind_own(config, kinds)
        asyncio.run(serve_role(home, sockets, ready, workers))
    elif role == "auth":
        from qtoaster.authd.server import serve_auth

        asyncio.run(serve_auth(home, ready, peer_uids.get("send"), peer_uids.get("smtpd")))
    elif role == "mailbox":
        from qtoaster.mailboxd.server import Peers, serve_mailbox

        serve_mailbox(
            home,
            ready,
            Peers(peer_uids.get("pop3d"), peer_uids.get("smtpd"), peer_uids.get("imapd")),
        )
    elif role == "metrics":
        from qtoaster.metrics.files import metrics_root
        from qtoaster.metricsd.server import serve_metrics

        sock = _metrics_socket(config, fds)
        asyncio.run(serve_metrics(metrics_root(home.run_dir), sock, ready))
    elif role == "http":
        assert executor is not None
        _serve_http(config, fds, executor, ready)
    elif role == "remote":  # started by the send role only (send/remoteclient.py)
        from qtoaster.remote.child import serve_remote

        if channel_fd is None:
            raise click.UsageError("serve remote is started by the send role (--channel-fd)")
        asyncio.run(serve_remote(config, socket.socket(fileno=channel_fd)))
    else:
        from qtoaster.send.role import serve_send

        asyncio.run(serve_send(config, ready, remote))


def _http_executor(home: Home) -> socket.socket:
    """Fork the http role's executor on a socketpair while this process is still what it
    was started as, before the HTTP stack is imported; the role's end of the pair."""
    from qtoaster.cli.adminfork import start_executor

    return start_executor(home)


def _serve_http(
    config: Config, fds: tuple[str, ...], channel: socket.socket, ready: Callable[[], None]
) -> None:
    from qtoaster.auth.protocol import socket_path
    from qtoaster.httpd.server import serve_http

    if fds:
        sock = _inherited(fds[0], ("http",))[1]
    elif config.settings.http_listen is not None:
        from qtoaster.supervisor.runner import ListenError, bind

        try:
            sock = bind(config.settings.http_listen, 1)[0]
        except ListenError as exc:
            _fail(str(exc))
    else:
        raise click.UsageError("serve http needs [listen] http (or --fd http:FD)")
    settings = config.settings.http
    certificate = None if settings.plain else config.home.control / "servercert.pem"
    asyncio.run(
        serve_http(sock, channel, socket_path(config.home), certificate, settings.admins, ready)
    )


def _peer_uids(config: Config) -> dict[str, int]:
    """As root, the uids of the roles' users (who may ask the auth role and the mailbox
    broker what); empty otherwise: every role is this user."""
    import pwd

    from qtoaster.core.privilege import running_as_root

    if not running_as_root():
        return {}
    users = config.settings.users
    try:
        return {
            role: pwd.getpwnam(getattr(users, role)).pw_uid
            for role in ("send", "pop3d", "imapd", "smtpd")
        }
    except KeyError as exc:
        raise click.ClickException(f"no such user: {exc}") from None


def _srs_key(config: Config) -> None:
    """A home made before SRS gets its key at start (docs/srs.md); as root it then gets
    the auth role's owner with the rest of the home."""
    from qtoaster.mailauth.srs import key_path, new_key, write_keys

    path = key_path(config.home)
    if config.settings.srs.enabled and not path.exists():
        write_keys(path, [new_key()])
        logging.getLogger("qtoaster.supervisor").info("created the SRS key %s", path)


def _prepare_home(config: Config, *, metrics: bool, http: bool = False) -> None:
    """As root: the roles' accounts must exist and the home gets their owners (decision
    0007); otherwise every role runs as this user. Said once, at start."""
    from qtoaster.core.privilege import running_as_root
    from qtoaster.supervisor import accounts, ownership

    log = logging.getLogger("qtoaster.supervisor")
    users = config.settings.users
    if not running_as_root():
        log.info("supervisor not started as root: every role runs as %s", accounts.current_user())
        return
    optional = (*(("metrics",) if metrics else ()), *(("http",) if http else ()))
    problems = accounts.check_accounts(users, optional=optional) + accounts.code_unreadable()
    if problems:
        raise click.ClickException(
            "\n".join(problems) + "\n(qtoaster config fix-owners creates them)"
        )
    _open_directory_once(config)
    ownership.make_run_dirs(config.home)
    for change in ownership.apply(config.home, users):
        log.info("supervisor owners: %s", change)
    roles = ("smtpd", "pop3d", "imapd", "send", "auth", "mailbox", *optional)
    log.info(
        "supervisor roles run as their own users: %s",
        ", ".join(f"{role} {accounts.role_names(users, role)[0]}" for role in roles),
    )


def _remote_child(config: Config) -> RemoteClient | None:
    """As root, the send role starts its remote delivery process as the remote user now:
    once send has dropped root it could not (send/remoteclient.py)."""
    from qtoaster.core.privilege import running_as_root
    from qtoaster.send.remoteclient import RemoteClient
    from qtoaster.supervisor.accounts import role_identity

    if not running_as_root():
        return None
    client = RemoteClient(config.home.root)
    try:
        client.start_now(role_identity(config.settings.users, "remote"))
    except ConfigError as exc:
        raise click.ClickException("\n".join(exc.problems)) from None
    return client


def _open_directory_once(config: Config) -> None:
    """As root, before the roles lose write access to it: a schema upgrade (credentials
    moving to their store) and SQLite's journal mode are done by this one open."""
    from qtoaster.core.errors import QtoasterError
    from qtoaster.directory.store import Directory

    settings = config.settings
    try:
        Directory.open(
            config.home, settings.database_url, credentials_url=settings.credentials_url
        ).close()
    except QtoasterError as exc:  # the roles retry; config check says more
        logging.getLogger("qtoaster.supervisor").warning("directory: %s", exc)


def _become(config: Config, role: str, *, announce: bool) -> None:
    """Leave root before serving (the supervisor said once who runs what; a role started
    alone says it itself)."""
    from qtoaster.supervisor.accounts import become

    try:
        said = become(config.settings.users, role)
    except ConfigError as exc:
        raise click.ClickException("\n".join(exc.problems)) from None
    if announce:
        logging.getLogger(f"qtoaster.{role}").info("%s", said)


def _inherited(value: str, kinds: tuple[str, ...]) -> tuple[str, socket.socket]:
    kind, _, fd = value.rpartition(":")
    if (kind or kinds[0]) not in kinds or not fd.isdigit():
        raise click.BadParameter(f"{value!r}: expected [KIND:]FD", param_hint="--fd")
    return kind or kinds[0], socket.socket(fileno=int(fd))


def _metrics_socket(config: Config, fds: tuple[str, ...]) -> socket.socket:
    """The metrics role's socket: ``--fd metrics:FD`` from the supervisor, else its own on
    [listen] metrics."""
    if fds:
        return _inherited(fds[0], ("metrics",))[1]
    listener = config.settings.metrics_listen
    if listener is None:
        raise click.UsageError("serve metrics needs [listen] metrics (or --fd metrics:FD)")
    from qtoaster.supervisor.runner import ListenError, bind

    try:
        return bind(listener, 1)[0]
    except ListenError as exc:
        _fail(str(exc))


def _bind_own(config: Config, kinds: tuple[str, ...]) -> list[tuple[str, socket.socket]]:
    from qtoaster.supervisor.runner import ListenError, bind

    listeners = [lst for lst in config.settings.listeners if lst.kind in kinds]
    try:
        return [(lst.kind, bind(lst, 1)[0]) for lst in listeners]
    except ListenError as exc:
        _fail(str(exc))


async def _serve_smtpd(
    home: Home, sockets: list[tuple[str, socket.socket]], ready: Callable[[], None], workers: int
) -> None:
    from qtoaster.smtpd.worker import Worker

    await Worker(home, workers).serve(sockets, ready)


async def _serve_pop3d(
    home: Home, sockets: list[tuple[str, socket.socket]], ready: Callable[[], None], workers: int
) -> None:
    from qtoaster.pop3d.worker import Pop3Worker

    await Pop3Worker(home).serve(sockets, ready)


async def _serve_imapd(
    home: Home, sockets: list[tuple[str, socket.socket]], ready: Callable[[], None], workers: int
) -> None:
    from qtoaster.imapd.worker import ImapWorker

    await ImapWorker(home).serve(sockets, ready)


ServeRole = Callable[
    [Home, list[tuple[str, socket.socket]], Callable[[], None], int], Coroutine[Any, Any, None]
]
# The roles that serve listeners: their kinds and how they serve them.
_WORKER_ROLES: dict[str, tuple[tuple[str, ...], ServeRole]] = {
    "smtpd": (SMTPD_KINDS, _serve_smtpd),
    "pop3d": (POP3_KINDS, _serve_pop3d),
    "imapd": (IMAP_KINDS, _serve_imapd),
}
