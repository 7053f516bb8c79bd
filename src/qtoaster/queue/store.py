"""QueueStore: the durable queue on disk (docs/queue.md is the full description).

Layout under ``queue/``: ``tmp/`` files being written, ``mess/`` committed messages
(one file each, format in :mod:`qtoaster.queue.format`), ``state/`` per-message
delivery results, ``bad/`` unreadable entries moved aside, ``trigger`` a FIFO.

Invariants:
- A file appears in ``mess/`` only by ``rename`` from ``tmp/`` after its data was
  fsynced, so ``mess/`` never holds a partial message.  The commit point is the
  fsync of ``mess/`` after the rename; ``Spool.commit`` returns only after it.
- Directory fsyncs are coalesced (group commit): a caller waits for one fsync that
  *started* after its rename, so N concurrent commits cost about two fsyncs, not N.
- Message ids ``<time_ns:016x>-<pid:x>-<seq:x>`` are unique, sort by time and are
  safe as file names; anything else in ``mess/`` is moved to ``bad/`` by recover().
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import re
import shutil
import stat
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from qtoaster.core.clock import Clock, SystemClock
from qtoaster.core.dsn import NO_DSN, EnvelopeDsn
from qtoaster.core.durable import DirSync, fsync_dir
from qtoaster.core.envelope import Envelope
from qtoaster.core.errors import QtoasterError, QueueError
from qtoaster.core.pid import pid
from qtoaster.queue import exitcodes
from qtoaster.queue.format import BadQueueFile, EnvelopeError, encode_header, read_header

__all__ = [
    "BadQueueFile",
    "NoSuchMessage",
    "QueueStore",
    "QueuedMessage",
    "Spool",
    "commit_message",
    "fsync_dir",
]

STALE_TMP_SECONDS = 36 * 3600  # qmail's cleanup age for pid/ files (spec 14.3)
_QID = re.compile(r"^[0-9a-f]{16}-[0-9a-f]+-[0-9a-f]+$")
_SEQ = itertools.count()
_BUFFER = 64 * 1024


class NoSuchMessage(QtoasterError, LookupError):
    """No message with that id in ``mess/``."""


@dataclass(frozen=True)
class QueuedMessage:
    qid: str
    path: Path
    birth: float
    origin: str
    envelope: Envelope
    body_offset: int  # where the message bytes start in path
    size: int  # message bytes
    dsn: EnvelopeDsn = NO_DSN  # the DSN parameters it came with (RFC 3461)


def new_qid() -> str:
    return f"{time.time_ns():016x}-{pid():x}-{next(_SEQ):x}"


def is_qid(name: str) -> bool:
    return _QID.match(name) is not None


class QueueStore:
    def __init__(self, path: Path, *, fsync: bool = True, clock: Clock | None = None) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.clock: Clock = clock or SystemClock()
        self.tmp = self.path / "tmp"
        self.mess = self.path / "mess"
        self.state = self.path / "state"
        self.bad = self.path / "bad"
        self.trigger = self.path / "trigger"
        self.hold_dir = self.path / "hold"
        self.mess_sync = DirSync(self.mess, fsync)
        self._trigger_lock = threading.Lock()
        self._trigger_fd: int | None = None
        self.state_sync = DirSync(self.state, fsync)

    @staticmethod
    def create(path: Path) -> None:
        """Create the queue directories (0700) and the trigger FIFO; idempotent."""
        path = Path(path)
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name in ("tmp", "mess", "state", "bad", "hold"):
            (path / name).mkdir(mode=0o700, exist_ok=True)
        trigger = path / "trigger"
        if not trigger.exists():
            os.mkfifo(trigger, 0o600)

    def mess_path(self, qid: str) -> Path:
        return self.mess / qid

    def state_path(self, qid: str) -> Path:
        return self.state / qid

    def open_spool(self, envelope: Envelope, origin: str, dsn: EnvelopeDsn = NO_DSN) -> Spool:
        """Start a message: ``tmp/ID`` created exclusively, header and envelope written."""
        try:
            header = encode_header(self.clock.time(), origin, envelope, dsn)
        except EnvelopeError as exc:
            raise QueueError(exc.code, str(exc)) from None
        qid = new_qid()
        path = f"{self.tmp}/{qid}"  # strings, not pathlib: this runs per message
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            raise QueueError(exitcodes.CREATE_ERROR, f"creating {path}: {exc}") from None
        spool = Spool(self, qid, os.fdopen(fd, "wb", buffering=_BUFFER))
        spool.write_raw(header)
        return spool

    def ids(self) -> list[str]:
        """Committed message ids, oldest first."""
        try:
            names = os.listdir(self.mess)
        except FileNotFoundError:
            return []
        return sorted(name for name in names if is_qid(name))

    def load(self, qid: str) -> QueuedMessage:
        """Header and envelope of ``mess/ID``; NoSuchMessage, or BadQueueFile if unreadable."""
        if not is_qid(qid):
            raise NoSuchMessage(qid)
        path = self.mess / qid
        try:
            with open(path, "rb") as stream:
                header = read_header(stream)
                size = os.fstat(stream.fileno()).st_size
        except FileNotFoundError:
            raise NoSuchMessage(qid) from None
        except OSError as exc:
            raise BadQueueFile(f"unreadable: {exc}") from None
        return QueuedMessage(
            qid=qid,
            path=path,
            birth=header.birth,
            origin=header.origin,
            envelope=header.envelope,
            body_offset=header.body_offset,
            size=size - header.body_offset,
            dsn=header.dsn,
        )

    def delete(self, qid: str) -> None:
        """Unlink ``mess/ID`` (made durable) then ``state/ID``; NoSuchMessage if absent."""
        if not is_qid(qid):
            raise NoSuchMessage(qid)
        state = f"{self.state}/{qid}"  # strings, not pathlib: this runs per message
        try:
            os.unlink(f"{self.mess}/{qid}")
        except FileNotFoundError:
            self._unlink_quietly(state)
            raise NoSuchMessage(qid) from None
        # State must not vanish while the message could come back after a crash; with no
        # state file, a message that comes back is only delivered again (at-least-once).
        if os.path.exists(state):
            self.mess_sync.sync()
            self._unlink_quietly(state)
        # A hold mark left by a deleted message is removed by recover(), not here: this
        # runs once per delivered message and a held message is rare.

    def hold(self, qid: str) -> None:
        """Mark a message held: the manager does not deliver it until released."""
        self.load(qid)  # NoSuchMessage for an unknown id
        self.hold_dir.mkdir(mode=0o700, exist_ok=True)  # homes made before hold existed
        (self.hold_dir / qid).touch(mode=0o600)

    def release(self, qid: str) -> bool:
        """Remove the hold mark; False if the message was not held."""
        try:
            os.unlink(self.hold_dir / qid)
        except FileNotFoundError:
            return False
        return True

    def held(self) -> set[str]:
        try:
            return {name for name in os.listdir(self.hold_dir) if is_qid(name)}
        except FileNotFoundError:
            return set()

    def move_to_bad(self, name: str) -> None:
        """Move ``mess/NAME`` (and its state file) aside into ``bad/``; never deletes."""
        os.replace(self.mess / name, self.bad / name)
        if (self.state / name).exists():
            os.replace(self.state / name, self.bad / f"{name}.state")
        self.mess_sync.sync()

    def recover(self, *, everything: bool = False) -> list[str]:
        """Clean up crash states (docs/queue.md); return one report line per action."""
        report = self._clean_tmp(everything)
        for name in sorted(os.listdir(self.mess)):
            reason = None if is_qid(name) else "not a queue id"
            if reason is None:
                try:
                    self.load(name)
                    continue
                except NoSuchMessage:
                    continue
                except BadQueueFile as exc:
                    reason = str(exc)
            self.move_to_bad(name)
            report.append(f"moved unreadable mess/{name} to bad/: {reason}")
        committed = set(os.listdir(self.mess))
        for name in sorted(os.listdir(self.state)):
            if name not in committed:
                self._unlink_quietly(self.state / name)
                report.append(f"removed orphan state/{name}")
        for name in sorted(self.held() - committed):
            self._unlink_quietly(self.hold_dir / name)
        return report

    def notify(self, qid: str) -> None:
        """Wake the manager through the trigger FIFO; no reader or a full pipe is fine.

        ``qid`` may also be an operator's word: ``!ID`` or ``!*`` (retry now), ``~ID``
        (hold or release changed); see queue/manager.py.

        The write end stays open between messages (two syscalls fewer per message); it
        is reopened after the reader went away (EPIPE) or was never there (ENXIO).
        """
        with self._trigger_lock:
            if self._trigger_fd is None:
                try:
                    self._trigger_fd = os.open(
                        self.trigger, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC
                    )
                except OSError:
                    return  # ENXIO: no manager is reading; it rescans periodically anyway
            try:
                os.write(self._trigger_fd, f"{qid}\n".encode())
            except BlockingIOError:
                pass  # the pipe is full: the manager has plenty to read already
            except OSError:
                os.close(self._trigger_fd)  # EPIPE: the manager restarted; reopen next time
                self._trigger_fd = None

    def _clean_tmp(self, everything: bool) -> list[str]:
        report = []
        limit = self.clock.time() - STALE_TMP_SECONDS
        for name in sorted(os.listdir(self.tmp)):
            path = self.tmp / name
            try:
                info = path.lstat()
            except FileNotFoundError:
                continue
            if everything or info.st_mtime < limit or not stat.S_ISREG(info.st_mode):
                self._unlink_quietly(path)
                report.append(f"removed stale tmp/{name}")
        return report

    @staticmethod
    def _unlink_quietly(path: str | Path) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


class Spool:
    """One message being received: buffered writes into ``tmp/ID``, then commit or abort."""

    def __init__(self, store: QueueStore, qid: str, stream: BinaryIO) -> None:
        self.qid = qid
        self._store = store
        self._tmp = f"{store.tmp}/{qid}"
        self._stream = stream  # buffered, over the O_EXCL descriptor
        self._size = 0
        self._written = 0  # header + message bytes
        self._done = False

    @property
    def size(self) -> int:
        return self._size

    @property
    def path(self) -> str:
        """The temporary file (for readers such as scanners: flush() first)."""
        return self._tmp

    @property
    def body_offset(self) -> int:
        """Where the message bytes start in :attr:`path`."""
        return self._written - self._size

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            self.abort()
            raise QueueError(exitcodes.WRITE_ERROR, f"writing {self._tmp}: {exc}") from None

    def insert_before_message(self, data: bytes, drop: Sequence[tuple[int, int]] = ()) -> None:
        """Put ``data`` (header lines a scanner adds) in front of the message bytes, and
        remove the ``drop`` ranges (start, end: offsets in the message, ascending, not
        overlapping; mailauth's forged Authentication-Results).

        The spooled file is copied once behind the queue header into ``ID.new``, which
        replaces it by rename: a crash leaves the old file or the new one whole, both
        uncommitted temporary files that recovery removes.  Blocking: run it in a thread.
        """
        self.flush()
        fresh = f"{self._tmp}.new"
        removed = 0
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            with open(self._tmp, "rb") as src, os.fdopen(os.open(fresh, flags, 0o640), "wb") as dst:
                dst.write(src.read(self.body_offset))
                dst.write(data)
                done = 0  # message bytes copied or skipped so far
                for start, end in drop:
                    if start < done or end <= start or end > self._size:
                        raise OSError(f"bad range {start}-{end} to remove")
                    dst.write(src.read(start - done))
                    src.seek(end - start, os.SEEK_CUR)
                    removed += end - start
                    done = end
                shutil.copyfileobj(src, dst, _BUFFER)
            os.replace(fresh, self._tmp)
            self._stream.close()
            self._stream = open(self._tmp, "ab", buffering=_BUFFER)  # noqa: SIM115
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(fresh)
            self.abort()
            raise QueueError(exitcodes.WRITE_ERROR, f"rewriting {self._tmp}: {exc}") from None
        self._written += len(data) - removed
        self._size += len(data) - removed

    def write_raw(self, data: bytes) -> None:
        self._written += len(data)
        try:
            self._stream.write(data)
        except OSError as exc:
            self.abort()
            raise QueueError(exitcodes.WRITE_ERROR, f"writing {self._tmp}: {exc}") from None

    def write(self, data: bytes) -> None:
        """Append message bytes (LF line endings, as they will be delivered)."""
        self.write_raw(data)
        self._size += len(data)

    def commit(self) -> str:
        """fsync, rename into ``mess/``, fsync ``mess/`` (the commit point), trigger."""
        if self._done:
            raise QueueError(exitcodes.INTERNAL_BUG, "spool already finished")
        stream = self._stream
        try:
            stream.flush()
            if self._store.fsync:
                os.fsync(stream.fileno())
            stream.close()
            os.rename(self._tmp, f"{self._store.mess}/{self.qid}")
        except OSError as exc:
            self.abort()
            raise QueueError(exitcodes.WRITE_ERROR, f"committing {self.qid}: {exc}") from None
        self._done = True
        try:
            self._store.mess_sync.sync()
        except OSError as exc:
            # Renamed but maybe not durable: refuse the 250; at worst a duplicate later.
            raise QueueError(exitcodes.WRITE_ERROR, f"syncing mess/: {exc}") from None
        self._store.notify(self.qid)
        return self.qid

    def abort(self) -> None:
        """Remove the temporary file; safe twice and after commit."""
        if self._done:
            return
        self._done = True
        try:
            self._stream.close()
        except OSError:
            pass
        try:
            os.unlink(self._tmp)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise

    def __enter__(self) -> Spool:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.abort()


def commit_message(
    store: QueueStore, envelope: Envelope, origin: str, chunks: Iterable[bytes]
) -> str:
    """Queue a whole message in one call (bounces, queue-inject, sendmail); returns the id."""
    with store.open_spool(envelope, origin) as spool:
        for chunk in chunks:
            spool.write(chunk)
        return spool.commit()
