"""``qtoaster run``: binds the listeners, runs the roles as child processes.

- Each listener gets one SO_REUSEPORT socket per worker, bound here so that port 0
  resolves once and every worker serves the same address; no other server can share
  the address, before or after us (`bind`), and a taken address is a `ListenError`.
- Children are ``python -m qtoaster serve ROLE`` processes that inherit their
  sockets and report readiness on a pipe; one line ``qtoaster ready: ...`` is
  printed when all of them are up.
- A child that dies is restarted (with a short back-off); the sockets stay open
  here, so connections waiting in the backlog are not lost.
- SIGTERM/SIGINT: passed on to every child, which stop gracefully; SIGHUP: the
  configuration is checked first, then the auth role and the smtpd, pop3d and imapd
  workers reload and the queue manager
  is restarted (it rebuilds its state from disk); "reloaded" is logged once it is ready
  again (its planned exit is not logged as a crash).
- Under systemd (``$NOTIFY_SOCKET``, supervisor.notify): READY=1 with the ready line,
  RELOADING=1 ... READY=1 around a reload, STOPPING=1 at shutdown.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from qtoaster.config.settings import IMAP_KINDS, POP3_KINDS, SMTPD_KINDS, Listener
from qtoaster.core.errors import QtoasterError
from qtoaster.core.home import Home
from qtoaster.supervisor.check import check_config
from qtoaster.supervisor.metricsdirs import metrics_environment
from qtoaster.supervisor.notify import Notifier

log = logging.getLogger("qtoaster.supervisor")
STOP_SECONDS = 40.0


@dataclass
class Child:
    role: str
    argv: list[str]
    fds: list[int]
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restarts: int = 0
    stopped_for_reload: bool = False  # its exit is the reload's, not a crash
    ready: asyncio.Event = field(default_factory=asyncio.Event)


# The owner our listening sockets are given when we run as root: a uid no process runs as.
# Linux lets a socket join a SO_REUSEPORT group only when its owner's uid matches, so
# with this owner another server (root or any user) cannot bind our address while we
# listen, and our own workers' sockets (all with this owner) still share it.
PRIVATE_UID = 0x7FFFFFF0


class ListenError(QtoasterError):
    """A listener cannot be bound; ``str()`` names the address and what to do."""


def where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen_problem(address: str, port: int, exc: OSError) -> str:
    """The operator's message for a bind that failed with *exc*."""
    text = f"cannot listen on {address}: "
    if exc.errno == errno.EADDRINUSE:
        return text + "address already in use (another server?)"
    if exc.errno == errno.EACCES and 0 < port < 1024:
        return text + (
            f"permission denied: port {port} is below 1024; run as root, grant "
            "CAP_NET_BIND_SERVICE (setcap cap_net_bind_service=+ep on the Python binary), "
            "or pick a port >= 1024"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return text + "no such local address"
    return text + (exc.strerror or str(exc))


def bind(listener: Listener, count: int) -> list[socket.socket]:
    """``count`` sockets on one address, shared by our workers only; `ListenError` if taken.

    One SO_REUSEPORT socket per worker (the kernel spreads connections among them; a
    single shared socket measured 25% slower on 2 workers: every worker wakes for every
    connection).  SO_REUSEPORT alone would also let any other process of the same uid
    bind the address and take a share of our connections, both ways round:

    - someone listening already: a probe socket *without* SO_REUSEPORT binds first and
      fails with EADDRINUSE against any listener, whatever its options (it has
      SO_REUSEADDR, which yields only to sockets that do not listen, so our own
      TIME_WAIT leftovers do not block a restart).  It stays bound until our sockets
      listen, so the port (port 0 included) cannot be taken in between.
    - someone binding after us: as root our sockets are owned by `PRIVATE_UID`, and Linux
      refuses SO_REUSEPORT across owners.  Not as root (a test or development server
      on a high port) the kernel offers nothing for this case: a process of the same
      user with SO_REUSEPORT can still join (docs/configuration.md says so).
    """
    family = socket.AF_INET6 if ":" in listener.host else socket.AF_INET
    address = where(listener.host, listener.port)
    probe = socket.socket(family, socket.SOCK_STREAM)
    sockets: list[socket.socket] = []
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            probe.bind((listener.host, listener.port))
        except OSError as exc:
            raise ListenError(listen_problem(address, listener.port, exc)) from exc
        port = probe.getsockname()[1]
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if os.geteuid() == 0:
                os.fchown(sock.fileno(), PRIVATE_UID, -1)
            try:
                sock.bind((listener.host, port))
                sock.listen(4096)
            except OSError as exc:
                raise ListenError(listen_problem(where(listener.host, port), port, exc)) from exc
            sock.set_inheritable(True)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    finally:
        probe.close()
    return sockets


class Supervisor:
    def __init__(
        self,
        home: Home,
        listeners: list[Listener],
        workers: int,
        pop3d_workers: int | None = None,
        imapd_workers: int | None = None,
        metrics: Listener | None = None,
        http: Listener | None = None,
    ) -> None:
        self.home = home
        self.listeners = listeners
        self.workers = workers  # smtpd processes
        self.pop3d_workers = workers if pop3d_workers is None else pop3d_workers
        self.imapd_workers = workers if imapd_workers is None else imapd_workers
        self.children: list[Child] = []
        self.stopping = False
        self.bound: list[tuple[Listener, list[socket.socket]]] = []
        self.ready_r, self.ready_w = os.pipe()
        os.set_inheritable(self.ready_w, True)
        self.notifier = Notifier.from_environment()  # taken out of the roles' environment
        self.reload_task: asyncio.Task[None] | None = None
        self.metrics = metrics  # the metrics role's listener (docs/metrics.md), or None
        self.http = http  # the http role's listener (docs/http.md), or None

    def _serve_argv(self, role: str, fds: Sequence[tuple[str, int]], workers: int = 1) -> list[str]:
        argv = [sys.executable, "-m", "qtoaster", "serve", role, "--home", str(self.home.root)]
        argv += ["--ready-fd", str(self.ready_w), "--supervised"]
        if workers > 1:  # each worker keeps its share of the connection limits
            argv += ["--workers", str(workers)]
        for kind, fd in fds:
            argv += ["--fd", f"{kind}:{fd}"]
        return argv

    def setup(self) -> None:
        count = {"smtpd": self.workers, "pop3d": self.pop3d_workers, "imapd": self.imapd_workers}
        roles = (("smtpd", SMTPD_KINDS), ("pop3d", POP3_KINDS), ("imapd", IMAP_KINDS))
        owner = {kind: role for role, kinds in roles for kind in kinds}
        self.bound = [(lst, bind(lst, count[owner[lst.kind]])) for lst in self.listeners]
        # SMTP kinds go to the smtpd workers, POP3 kinds to the pop3d workers, IMAP kinds to
        # the imapd workers; a role without listeners is not started.
        for role, kinds in roles:
            mine = [(lst, socks) for lst, socks in self.bound if lst.kind in kinds]
            if not mine:
                continue
            for i in range(count[role]):
                fds = [(lst.kind, socks[i].fileno()) for lst, socks in mine]
                argv = self._serve_argv(role, fds, count[role])
                self.children.append(Child(f"{role}#{i}", argv, [fd for _, fd in fds]))
        self.children.append(Child("send", self._serve_argv("send", []), []))
        # The auth role checks every login and the mailbox broker is pop3d's and smtpd's
        # door to a Maildir (decision 0007): both started first, see run().
        self.children.insert(0, Child("mailbox", self._serve_argv("mailbox", []), []))
        self.children.insert(0, Child("auth", self._serve_argv("auth", []), []))
        if self.metrics is not None:
            sock = bind(self.metrics, 1)[0]
            self.bound.append((self.metrics, [sock]))
            argv = self._serve_argv("metrics", [("metrics", sock.fileno())])
            self.children.append(Child("metrics", argv, [sock.fileno()]))
        if self.http is not None:
            sock = bind(self.http, 1)[0]
            self.bound.append((self.http, [sock]))
            argv = self._serve_argv("http", [("http", sock.fileno())])
            self.children.append(Child("http", argv, [sock.fileno()]))

    def addresses(self) -> str:
        parts = []
        for lst, socks in self.bound:
            host, port = socks[0].getsockname()[:2]
            parts.append(f"{lst.kind} {'[' + host + ']' if ':' in host else host}:{port}")
        return ", ".join(parts)

    def spawn(self, child: Child) -> None:
        child.ready.clear()
        child.started = time.monotonic()
        child.proc = subprocess.Popen(
            [*child.argv, "--child-name", child.role],
            pass_fds=[*child.fds, self.ready_w],
            env=metrics_environment(self.home, child.role) if self.metrics else None,
        )

    def on_ready_pipe(self) -> None:
        data = os.read(self.ready_r, 4096).decode()
        for line in data.split():
            for child in self.children:
                if child.proc is not None and line == f"ready:{child.proc.pid}":
                    child.ready.set()

    def signal(
        self,
        signum: int,
        roles: tuple[str, ...] = (
            "auth",
            "mailbox",
            "smtpd",
            "pop3d",
            "imapd",
            "send",
            "metrics",
            "http",
        ),
    ) -> None:
        for child in self.children:
            if child.proc and child.proc.poll() is None and child.role.startswith(roles):
                child.proc.send_signal(signum)

    def hangup(self) -> None:
        problems = check_config(self.home)
        if problems:
            log.error(
                "supervisor SIGHUP: configuration has problems, not reloading:\n%s",
                "\n".join(problems),
            )
            return
        log.info("supervisor SIGHUP: reloading")
        self.notifier.reloading()
        restarted = [c for c in self.children if c.role == "send" and c.proc is not None]
        for child in restarted:
            child.stopped_for_reload = True
        self.signal(signal.SIGHUP, ("auth", "smtpd", "pop3d", "imapd"))
        self.signal(signal.SIGTERM, ("send",))  # restarted by the monitor with fresh state
        if self.reload_task is not None:
            self.reload_task.cancel()  # this reload's READY=1 stands for both
        self.reload_task = asyncio.get_running_loop().create_task(self.reloaded(restarted))

    async def reloaded(self, restarted: list[Child]) -> None:
        """Once the restarted roles are ready again: the log line and READY=1 (systemd
        keeps the unit "reloading" until then)."""
        try:
            await asyncio.wait_for(self.restarted_ready(restarted), STOP_SECONDS)
        except TimeoutError:
            log.warning(
                "supervisor reload: the queue manager is not ready after %.0f s", STOP_SECONDS
            )
        else:
            log.info("reloaded")
        self.notifier.ready()

    async def restarted_ready(self, children: list[Child]) -> None:
        for child in children:
            while child.stopped_for_reload or not child.ready.is_set():
                await asyncio.sleep(0.05)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.ready_r, self.on_ready_pipe)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.hangup)
        # The auth role and the broker first: workers ask auth for the offer (CRAM-MD5,
        # APOP) before serving, and the first login needs the broker.
        first = [c for c in self.children if c.role in ("auth", "mailbox")]
        for child in first:
            self.spawn(child)
        waiting = loop.create_task(asyncio.wait_for(self.all_ready(first), STOP_SECONDS))
        await asyncio.wait([waiting, loop.create_task(stop.wait())], return_when="FIRST_COMPLETED")
        for child in self.children:
            if child not in first:
                self.spawn(child)
        ready = loop.create_task(self.all_ready())
        monitor = loop.create_task(self.monitor(stop))
        stopped = loop.create_task(stop.wait())
        done, _ = await asyncio.wait([ready, stopped], return_when=asyncio.FIRST_COMPLETED)
        if ready in done:
            print(
                f"qtoaster ready: {self.addresses()}; workers {self.workers}; "
                f"queue manager running; home {self.home.root}",
                flush=True,
            )
            self.notifier.ready(f"serving {self.addresses()}")
        await stop.wait()
        self.stopping = True
        self.notifier.stopping()
        if self.reload_task is not None:
            self.reload_task.cancel()
        monitor.cancel()
        return await self.shutdown()

    async def all_ready(self, children: list[Child] | None = None) -> None:
        for child in self.children if children is None else children:
            await child.ready.wait()

    async def monitor(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(0.2)
            for child in self.children:
                if child.proc is None or child.proc.poll() is None or self.stopping:
                    continue
                code = child.proc.returncode
                if child.stopped_for_reload:
                    child.stopped_for_reload = False
                    log.info(
                        "supervisor %s stopped for the reload (exit %s); starting it again",
                        child.role,
                        code,
                    )
                    child.restarts = 0
                    self.spawn(child)
                    continue
                log.warning("supervisor %s exited with %s; restarting", child.role, code)
                if time.monotonic() - child.started < 1.0:
                    child.restarts += 1
                    await asyncio.sleep(min(0.5 * child.restarts, 5.0))
                else:
                    child.restarts = 0
                self.spawn(child)

    async def shutdown(self) -> int:
        self.signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        while time.monotonic() < deadline:
            if all(c.proc is None or c.proc.poll() is not None for c in self.children):
                break
            await asyncio.sleep(0.05)
        self.signal(signal.SIGKILL)
        for child in self.children:
            if child.proc is not None:
                child.proc.wait()
        for _, socks in self.bound:
            for sock in socks:
                sock.close()
        return 0
