"""Per-message delivery results: the append-only file ``queue/state/ID``.

One record per line, indexes counting the envelope's recipients from 0::

    D <idx>                      delivered (success)
    D <idx> dsn                  delivered to a next hop that got the DSN request (RFC
                                 3461 5.2.3): its success notice is that hop's, not ours
    F <idx> <report>             permanent failure; report with \\ and LF escaped
    B <bounce id | ->            the bounce for every F is queued (``-``: none needed)
    W <notice id | ->            the delay warning is queued (``-``: none was due), once
    S <notice id>                the success notice is queued (for every recipient that
                                 asked), once: a crash before the delete does not repeat it

Invariants: records are only appended, and each append is fsynced before the
manager acts on it (qmail marks ``T`` -> ``D`` in place; an append-only file gives
the same guarantee and survives a torn write).  A last line without its LF is a
torn append that was never acknowledged and is ignored.  Any other malformed line
makes the whole entry unreadable (BadQueueFile), so it is moved aside, not retried.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from qtoaster.core.envelope import decode, encode
from qtoaster.queue.format import BadQueueFile


@dataclass
class MessageState:
    delivered: set[int] = field(default_factory=set)
    failed: dict[int, str] = field(default_factory=dict)
    bounce: str | None = None  # bounce id, "-" when no bounce was needed, None: not yet
    warned: str | None = None  # delay warning id, "-" when none was due, None: not yet
    passed_on: set[int] = field(default_factory=set)  # delivered ones with ``D <idx> dsn``
    notified: str | None = None  # success notice id (``S``), None: not sent

    @property
    def done(self) -> set[int]:
        """Recipients with a final result."""
        return self.delivered | set(self.failed)


def escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def unescape(text: str) -> str:
    out: list[str] = []
    chars = iter(text)
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, "\\")
            out.append("\n" if nxt == "n" else nxt)
        else:
            out.append(ch)
    return "".join(out)


def delivered(idx: int, dsn: bool = False) -> str:
    return f"D {idx} dsn\n" if dsn else f"D {idx}\n"


def failed(idx: int, report: str) -> str:
    return f"F {idx} {escape(report)}\n"


def bounced(bounce_id: str | None) -> str:
    return f"B {bounce_id or '-'}\n"


def warned(notice_id: str | None) -> str:
    return f"W {notice_id or '-'}\n"


def notified(notice_id: str) -> str:
    return f"S {notice_id}\n"


def parse_state(raw: bytes) -> MessageState:
    state = MessageState()
    lines = raw.split(b"\n")
    for number, line in enumerate(lines[:-1], 1):  # lines[-1]: "" or a torn append
        kind, _, rest = decode(line).partition(" ")
        try:
            if kind == "D":
                idx, _, flag = rest.partition(" ")
                if flag not in ("", "dsn"):
                    raise ValueError(flag)
                state.delivered.add(int(idx))
                if flag:
                    state.passed_on.add(int(idx))
            elif kind == "F":
                idx, _, report = rest.partition(" ")
                state.failed[int(idx)] = unescape(report)
            elif kind == "B" and rest:
                state.bounce = rest
            elif kind == "W" and rest:
                state.warned = rest
            elif kind == "S" and rest:
                state.notified = rest
            else:
                raise ValueError(kind)
        except ValueError:
            raise BadQueueFile(f"state line {number} malformed") from None
    return state


def read_state(path: Path) -> MessageState:
    """The results recorded so far; an absent file means none."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return MessageState()
    return parse_state(raw)


def append(
    path: Path,
    records: Iterable[str],
    *,
    fsync: bool = True,
    sync_dir: Callable[[], None] | None = None,
) -> None:
    """Append records durably: write, fsync; a newly created file also gets its
    directory synced (``sync_dir``) so the name survives a crash.  Single writer only."""
    data = b"".join(encode(r) for r in records)
    flags = os.O_RDWR | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
        created = False
    except FileNotFoundError:
        fd = os.open(path, flags | os.O_CREAT, 0o600)
        created = True
    try:
        end = _drop_torn_tail(fd)
        view = memoryview(data)
        while view:
            written = os.pwrite(fd, view, end)
            view, end = view[written:], end + written
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    if created and fsync and sync_dir is not None:
        sync_dir()


def _drop_torn_tail(fd: int) -> int:
    """Cut a torn last record (no LF) so the next one starts on its own line; the
    manager is the only writer, so this cannot race.  Returns the new size."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    keep = os.pread(fd, size, 0).rfind(b"\n") + 1
    os.ftruncate(fd, keep)
    return keep
