"""Run one ``|command`` line of a .qmail file (qmail-command(8), spec 16.3).

``sh -c command`` runs in its own process group, in ``cwd``, with exactly ``env``; the
message is streamed to its stdin and its stdout+stderr are collected as the report.

Invariants:
- the message is never held whole in memory: one CHUNK at a time goes to the pipe;
- the call never blocks forever: one thread multiplexes stdin, stdout and the child's
  exit (a pidfd) with a deadline; a child that stops reading (EPIPE) or exits early is
  fine, and at the deadline the whole process group is killed (temporary failure);
- exit codes map as qmail-local's mailprogram(): 0 success, 99 success and ignore the
  following lines, 64 65 70 76 77 78 100 112 permanent, anything else or a signal
  temporary.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from qtoaster.core.outcome import Outcome
from qtoaster.delivery.mbox import from_line

CHUNK = 64 * 1024
REPORT_LIMIT = 1000  # bytes of program output kept for the report
PERMANENT_CODES = frozenset({64, 65, 70, 76, 77, 78, 100, 112})
IGNORE_REST = 99

# qmail-local.c's texts.
CRASHED = "Aack, child crashed. (#4.3.0)"
# Ours: qmail-local has no program timeout; worded like its maildir one.
TIMEOUT = "Timeout on program delivery. (#4.3.0)"

_POLL = 0.05  # only without pidfd_open (Linux < 5.3): how often to look for the exit


@dataclass(frozen=True, slots=True)
class ProgramResult:
    outcome: Outcome
    report: str
    ignore_rest: bool  # exit 99: skip the following .qmail lines (earlier forwards stay)


def qmail_env(
    sender: str,
    recipient: str,
    local: str,
    host: str,
    ext: str,
    default: str | None,
    dtline: str,
    rpline: str,
    *,
    user: str,
    home: str,
    newsender: str | None = None,
    ufline: str | None = None,
    now: float | None = None,
) -> dict[str, str]:
    """The variables qmail-local gives a program (qmail-command(8)).

    ``dtline`` and ``rpline`` are passed as qmail-local sets them: the whole header line,
    trailing newline included (qmail-command(8)).
    ``default`` is None when no ``-default`` file matched (DEFAULT is then unset);
    ``newsender`` defaults to ``sender``; ``ufline`` to the mbox From line at ``now``.
    Merge the result over the base environment (PATH...) the caller wants to pass on.
    """
    env = {
        "SENDER": sender,
        "NEWSENDER": sender if newsender is None else newsender,
        "RECIPIENT": recipient,
        "USER": user,
        "HOME": home,
        "LOCAL": local,
        "HOST": host,
        "DTLINE": dtline,
        "RPLINE": rpline,
        "UFLINE": ufline if ufline is not None else _ufline(sender, now),
    }
    # HOST2-4: host without its last 1, 2, 3 dot components; EXT2-4: ext after its
    # first 1, 2, 3 dashes (empty when there are fewer), as qmail-local.c computes them.
    end = len(host)
    tail = ext
    env["EXT"] = ext
    for n in (2, 3, 4):
        end = _rchr(host, end)
        env[f"HOST{n}"] = host[:end]
        dash = tail.find("-")
        tail = "" if dash < 0 else tail[dash + 1 :]
        env[f"EXT{n}"] = tail
    if default is not None:
        env["DEFAULT"] = default
    return env


def _rchr(host: str, end: int) -> int:
    """byte_rchr(): the index of the last '.' in host[:end], or end if there is none."""
    dot = host.rfind(".", 0, end)
    return end if dot < 0 else dot


def _ufline(sender: str, now: float | None) -> str:
    when = time.time() if now is None else now
    return from_line(sender, when).decode("utf-8", "surrogateescape")


def run_program(
    command: str,
    message: BinaryIO,
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float = 86400.0,
) -> ProgramResult:
    """Run ``sh -c command`` with the rest of ``message`` on stdin; how it went."""
    try:
        child = subprocess.Popen(
            ["/bin/sh", "-c", command],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env),
            process_group=0,
        )
    except OSError as exc:
        return ProgramResult(Outcome.TEMPORARY, _spawn_error(exc, cwd), False)
    exchange = _Exchange(child, message)
    problem: str | None = TIMEOUT  # should run() raise, the child must not outlive us
    try:
        problem = exchange.run(time.monotonic() + timeout)
    finally:
        exchange.close()
        if problem is not None:
            _kill_group(child)
        child.wait()
    output = exchange.output.decode("utf-8", "replace")
    if problem is not None:
        return ProgramResult(Outcome.TEMPORARY, output + problem, False)
    return _result(child.returncode, output)


def _result(code: int, output: str) -> ProgramResult:
    if code < 0:
        return ProgramResult(Outcome.TEMPORARY, output + CRASHED, False)
    if code in (0, IGNORE_REST):
        return ProgramResult(Outcome.SUCCESS, output, code == IGNORE_REST)
    if code in PERMANENT_CODES:
        return ProgramResult(Outcome.PERMANENT, output, False)
    return ProgramResult(Outcome.TEMPORARY, output, False)


def _spawn_error(exc: OSError, cwd: Path) -> str:
    # subprocess reports a failed chdir or exec in the child with its file name.
    if exc.filename is not None and os.fspath(exc.filename) == os.fspath(cwd):
        return f"Unable to switch to {cwd}: {exc.strerror}. (#4.3.0)"
    if exc.filename == "/bin/sh":
        return f"Unable to run /bin/sh: {exc.strerror}. (#4.3.0)"
    return f"Unable to fork: {exc.strerror}. (#4.3.0)"


def _kill_group(child: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)


class _Exchange:
    """Feed the message to the child's stdin while collecting its output."""

    def __init__(self, child: subprocess.Popen[bytes], message: BinaryIO) -> None:
        assert child.stdin is not None and child.stdout is not None
        self._child = child
        self._message = message
        self._stdin: int | None = child.stdin.fileno()
        self._stdout = child.stdout.fileno()
        self._pending = memoryview(b"")
        self._eof = False
        self.output = bytearray()
        self._selector = selectors.DefaultSelector()
        os.set_blocking(self._stdin, False)
        os.set_blocking(self._stdout, False)
        self._selector.register(self._stdin, selectors.EVENT_WRITE)
        self._selector.register(self._stdout, selectors.EVENT_READ)
        self._pidfd: int | None = None
        with contextlib.suppress(AttributeError, OSError):
            self._pidfd = os.pidfd_open(child.pid)
            self._selector.register(self._pidfd, selectors.EVENT_READ)

    def run(self, deadline: float) -> str | None:
        """Exchange until the output ends and the child exits; a problem text or None."""
        while not (self._eof and self._stdin is None):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return TIMEOUT
            wait = remaining if self._pidfd is not None else min(remaining, _POLL)
            for key, _ in self._selector.select(wait):
                if key.fd == self._stdout:
                    self._read()
                elif key.fd == self._stdin:
                    problem = self._feed()
                    if problem is not None:
                        return problem
            if self._child.poll() is not None:
                # Exited: take what it wrote, but do not wait for an EOF that a
                # background grandchild holding the pipe could delay forever.
                self._read()
                break
        self._close_stdin()
        try:
            self._child.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return TIMEOUT
        return None

    def _read(self) -> None:
        while not self._eof:
            try:
                data = os.read(self._stdout, CHUNK)
            except BlockingIOError:
                return
            if not data:
                self._eof = True
                self._selector.unregister(self._stdout)
                return
            room = REPORT_LIMIT - len(self.output)
            if room > 0:
                self.output += data[:room]

    def _feed(self) -> str | None:
        """Write the next piece of the message; a problem text if it cannot be read."""
        assert self._stdin is not None
        if not self._pending:
            try:
                self._pending = memoryview(self._message.read(CHUNK))
            except OSError as exc:
                return f"Unable to read message: {exc.strerror}. (#4.3.0)"
            if not self._pending:
                self._close_stdin()
                return None
        try:
            written = os.write(self._stdin, self._pending)
        except BlockingIOError:
            return None
        except BrokenPipeError:
            # The program stopped reading (or never did): qmail-command(8) allows it.
            self._close_stdin()
            return None
        self._pending = self._pending[written:]
        return None

    def _close_stdin(self) -> None:
        if self._stdin is not None:
            self._selector.unregister(self._stdin)
            self._stdin = None
            assert self._child.stdin is not None
            self._child.stdin.close()

    def close(self) -> None:
        self._close_stdin()
        self._selector.close()
        if self._pidfd is not None:
            os.close(self._pidfd)
        assert self._child.stdout is not None
        self._child.stdout.close()
