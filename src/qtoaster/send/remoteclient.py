"""The send role's side of remote delivery: it owns the remote delivery process and asks it.

:class:`RemoteClient` is the remote lane's agent (``RemoteAgentLike``): each ``deliver``
becomes a ``Deliver`` frame on a socketpair to ``qtoaster serve remote`` (``remote/child.py``)
carrying the queue file's descriptor, and the ``Answer`` with the same id is its result.
The child is started on first use, started again on the next delivery after it died (at
most once per ``RESTART_DELAY``), and stopped at shutdown by closing the channel.

Invariants: results are recorded by the send role only (the child never touches the queue),
so a delivery in flight when the child dies is answered TEMPORARY (``DIED``) and retried:
never lost, never recorded twice (a message the remote server had already taken when the
child died goes out again, as after qmail-remote was killed); an answer that does not fit
its request (wrong number of results) is a broken child: it is stopped, and the delivery
deferred.  Privileges: :func:`child_popen_kwargs` is the one place that says how the child
is started.  Started as root, the send role starts the child at once as the remote user
(:meth:`RemoteClient.start_now`, before it drops root itself); having no right to start
another as that user, it answers the deliveries of a child that died TEMPORARY and calls
``on_gone`` (the role stops, and its supervisor starts it, and so a new child, again).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qtoaster.core.dsn import NO_DSN, EnvelopeDsn
from qtoaster.core.outcome import Outcome, Result
from qtoaster.core.privilege import Identity
from qtoaster.remote.body import Body
from qtoaster.remote.channel import Answer, Deliver, Message
from qtoaster.remote.link import Link

log = logging.getLogger("qtoaster.remote")

DIED = "The remote delivery process stopped during this delivery; I'll try again later. (#4.3.0)"
RESTART_DELAY = 1.0  # at most one start per second, so a child that dies at once cannot spin
STOP_WAIT = 10.0  # after closing the channel: how long the child may take to QUIT and exit


@dataclass(frozen=True, slots=True)
class Attempt:
    results: list[Result]
    reached: bool


def child_popen_kwargs(
    home: Path, channel_fd: int, identity: Identity | None = None
) -> dict[str, Any]:
    """How the remote delivery process is started: ``subprocess.Popen(**kwargs)``.

    With ``identity`` (started as root: the remote user of decision 0007) the child runs as
    that user from its first instruction; it opens no queue file, it reads the descriptors
    it is handed.
    """
    who: dict[str, Any] = {}
    if identity is not None:
        who = {"user": identity.uid, "group": identity.gid, "extra_groups": identity.groups}
    return {
        **who,
        "args": [
            sys.executable,
            "-m",
            "qtoaster",
            "serve",
            "remote",
            "--home",
            str(home),
            "--channel-fd",
            str(channel_fd),
            "--supervised",  # dies with the send role (PR_SET_PDEATHSIG)
            "--child-name",
            "remote",
        ],
        "pass_fds": (channel_fd,),
        "stdin": subprocess.DEVNULL,  # stdout, stderr: the send role's, so the log is one
    }


class RemoteClient:
    def __init__(self, home: Path) -> None:
        self.home = home
        self._proc: subprocess.Popen[bytes] | None = None
        self._link: Link | None = None
        self._pending: dict[int, tuple[asyncio.Future[Attempt], int]] = {}
        self._next_id = 0
        self._started = -RESTART_DELAY
        self._starting = asyncio.Lock()
        self._reaping: set[asyncio.Task[None]] = set()
        self._made: socket.socket | None = None  # start_now's end of the channel
        self._once = False  # started as another user by start_now: never started again
        self.on_gone: Callable[[], None] = lambda: None

    def start_now(self, identity: Identity) -> None:
        """Start the child as ``identity`` now, while this process is root (see the module
        docstring); the channel is taken up on the first delivery."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours.set_inheritable(False)
        try:
            self._proc = subprocess.Popen(
                **child_popen_kwargs(self.home, theirs.fileno(), identity)
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._made, self._once = ours, True
        log.info(
            "remote started the remote delivery process as %s, pid %d",
            identity.user,
            self._proc.pid,
        )

    @property
    def pid(self) -> int | None:
        """The running child's pid (for tests and logs)."""
        return self._proc.pid if self._proc is not None and self._link is not None else None

    async def deliver(
        self,
        body: Body,
        sender: str,
        recipients: Sequence[str],
        domain: str,
        requiretls: bool = False,
        smtputf8: bool = False,
        dsn: EnvelopeDsn = NO_DSN,
        binarymime: bool = False,
    ) -> Attempt:
        link = await self._running()
        if link is None:  # the child of start_now is gone; the role is stopping
            return Attempt([Result(Outcome.TEMPORARY, DIED)] * len(recipients), False)
        self._next_id += 1
        request = Deliver(
            self._next_id,
            body.offset,
            body.size,
            sender,
            tuple(recipients),
            domain,
            body.head,
            requiretls,
            smtputf8,
            dsn,
            binarymime,
        )
        future: asyncio.Future[Attempt] = asyncio.get_running_loop().create_future()
        self._pending[request.id] = (future, len(recipients))
        try:
            link.send(request, body.fd)
            if link.closed and not future.done():  # the write failed before any answer
                return Attempt([Result(Outcome.TEMPORARY, DIED)] * len(recipients), True)
            return await future
        finally:
            # Cancelled (shutdown): the child may still answer; that answer is dropped and
            # the recipients, never recorded, are tried again after the restart.
            self._pending.pop(request.id, None)

    async def close(self) -> None:
        """Close the channel: the child finishes, QUITs its cached connections and exits."""
        link, proc = self._link, self._proc
        if link is not None:
            link.close("send role stopping")
        if self._made is not None:  # started by start_now, never used: end it the same way
            self._made.close()
            self._made = None
        if proc is not None:
            await self._reap(proc, STOP_WAIT)
        if self._reaping:
            await asyncio.gather(*self._reaping, return_exceptions=True)

    # -- the child ---------------------------------------------------------------------

    async def _running(self) -> Link | None:
        async with self._starting:
            if self._link is not None and not self._link.closed:
                return self._link
            if self._made is not None and self._proc is not None:
                proc, ours, self._made = self._proc, self._made, None
                self._link = Link(
                    ours, self._on_message, lambda why: self._on_close(proc, why), accept_fds=False
                )
                return self._link
            if self._once:
                self.on_gone()
                return None
            wait = self._started + RESTART_DELAY - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._started = time.monotonic()
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                ours.set_inheritable(False)
                proc = subprocess.Popen(**child_popen_kwargs(self.home, theirs.fileno()))
            except BaseException:
                ours.close()
                raise
            finally:
                theirs.close()
            self._proc = proc
            self._link = Link(
                ours, self._on_message, lambda why: self._on_close(proc, why), accept_fds=False
            )
            log.info("remote started the remote delivery process, pid %d", proc.pid)
            return self._link

    def _on_message(self, message: Message, fd: int | None) -> None:
        assert fd is None  # accept_fds=False: a descriptor closes the link first
        if not isinstance(message, Answer):
            self._broken("a request from the remote process")
            return
        entry = self._pending.get(message.id)
        if entry is None:
            return  # its delivery was cancelled meanwhile
        future, count = entry
        if len(message.results) != count:
            self._broken(f"{len(message.results)} results for {count} recipients")
            return
        if not future.done():
            future.set_result(Attempt(list(message.results), message.reached))

    def _broken(self, what: str) -> None:
        if self._link is not None:
            self._link.close(f"protocol violation: {what}")

    def _on_close(self, proc: subprocess.Popen[bytes], reason: str) -> None:
        """The channel ended: every delivery waiting on it is deferred; the child is reaped
        (killed if it does not exit) and the next delivery starts a new one."""
        if self._proc is proc:
            self._link = None
        waiting = [(f, n) for f, n in self._pending.values() if not f.done()]
        for future, count in waiting:
            future.set_result(Attempt([Result(Outcome.TEMPORARY, DIED)] * count, True))
        if reason != "send role stopping":
            log.warning(
                "remote the remote delivery process (pid %d) is gone (%s); %d deliveries in "
                "flight deferred",
                proc.pid,
                reason,
                len(waiting),
            )
            task = asyncio.get_running_loop().create_task(self._reap(proc, 2.0))
            self._reaping.add(task)
            task.add_done_callback(self._reaping.discard)
            if self._once:
                self.on_gone()

    async def _reap(self, proc: subprocess.Popen[bytes], patience: float) -> None:
        try:
            await asyncio.to_thread(proc.wait, patience)
        except subprocess.TimeoutExpired:
            try:
                proc.kill()
            except ProcessLookupError:
                pass
            except PermissionError:
                # Started as the remote user (start_now): this user may not signal it. It
                # dies with this process (PR_SET_PDEATHSIG), which is stopping.
                log.warning("remote the remote delivery process (pid %d) did not stop", proc.pid)
                return
            await asyncio.to_thread(proc.wait)
        if proc.returncode not in (0, None):
            log.warning(
                "remote the remote delivery process (pid %d) exited with %d",
                proc.pid,
                proc.returncode,
            )
