"""One POP3 session's snapshot of a Maildir: qmail-pop3d's view of the files (spec 19.5).

At login the Maildir's ``new/`` and ``cur/`` are scanned (names and stat only), ``tmp/``
files unused for 36 hours are removed (maildir(5)), and the messages are numbered from 1,
oldest mtime first (nanoseconds; ties by uid, then name).  Deletions are only marks until
:meth:`Mailbox.commit` (RFC 1939 section 6, the UPDATE state): a dropped connection changes
nothing.

Sizes are wire sizes (RFC 1939 section 5, LIST: "the exact size of the message"), not
qmail's on-disk sizes (the known deviation noted in spec 19.5).  The wire form of a message
is defined line by line, a line being the bytes up to and including an LF, or the final
bytes without one: drop the LF and at most one CR before it, send the rest followed by CRLF
(before any dot-stuffing, which RFC 1939 does not count).  So a stored LF becomes CRLF, a
stored CRLF stays, and an unterminated last line gets its CRLF; :func:`wire_size` counts it.

Counting needs a read of each message, so the sizes are cached in
``<Maildir>/qtoaster-pop3-sizes`` (INDEX_FILE): one ``<uid> TAB <disk size> TAB <wire size>``
line per message after a version line, then ``crc <crc32 of everything before>``.
Invariants of the cache:
- only messages new since the last login are read; an entry counts only when the file's
  disk size still matches (a Maildir message never changes, so this catches stale entries);
- the file is replaced whole (written in ``tmp/``, renamed); a torn or garbage file fails the
  CRC or the version line and is ignored whole, so the cache can cost time, never correctness;
- entries of vanished messages are dropped at the next write; failing to write is not an
  error (a read-only Maildir just reads every message at each login).
"""

from __future__ import annotations

import itertools
import logging
import os
import stat
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from qtoaster.core.errors import PermanentFailure, TemporaryFailure
from qtoaster.core.pid import pid
from qtoaster.maildir import names
from qtoaster.maildir.litter import clean_tmp
from qtoaster.maildir.quota import record

log = logging.getLogger(__name__)

INDEX_FILE = "qtoaster-pop3-sizes"
CHUNK = 64 * 1024
_INDEX_VERSION = b"qtoaster-pop3-sizes 1"
_tmp_counter = itertools.count(1)

# The -ERR texts of qmail-pop3d (spec 19.5), byte for byte.
NO_MAILDIR = "this user has no $HOME/Maildir"
SCAN_FAILED = "unable to scan $HOME/Maildir"
COUNTED_FROM_1 = "messages are counted from 1"
NOT_THAT_MANY = "not that many messages"
ALREADY_DELETED = "already deleted"


class MailboxError(TemporaryFailure):
    """The Maildir cannot be used; ``text`` is qmail-pop3d's -ERR text."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class MessageNumberError(PermanentFailure):
    """A message number names no usable message; ``text`` is qmail-pop3d's -ERR text."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


@dataclass(frozen=True, slots=True)
class Message:
    number: int  # from 1, in mtime order
    name: str  # relative to the Maildir: "new/<unique>,S=<n>" or "cur/<unique>:2,<flags>"
    uid: str  # UIDL: the name without new/ or cur/ and without the ":2,..." info (19.5)
    size: int  # octets on the wire, CRLF line ends, no dot-stuffing (RFC 1939 section 5)


_Found = tuple[int, str, str, int]
"""A scanned file: (mtime_ns, uid, name, disk size).  The field order is the numbering
order, oldest mtime first, ties by uid, then name (unique), so a plain sort of these tuples
numbers the messages.  Plain tuples, not a class: a login builds one per message."""


def wire_size(path: str | os.PathLike[str]) -> int:
    """The message's size in its wire form (module docstring), read in CHUNK pieces."""
    size = bare = 0
    last = b""
    with open(path, "rb") as stream:
        while chunk := stream.read(CHUNK):
            bare += chunk.count(b"\n") - chunk.count(b"\r\n")
            if last == b"\r" and chunk[:1] == b"\n":
                bare -= 1  # a CRLF split across two chunks
            last = chunk[-1:]
            size += len(chunk)
    if last == b"\r":
        return size + bare + 1  # unterminated last line: its CR becomes the CR of CRLF
    if last and last != b"\n":
        return size + bare + 2
    return size + bare


def _scan(base: str) -> list[_Found]:
    """new/ and cur/, oldest first; raises OSError when a directory cannot be read."""
    found: list[_Found] = []
    is_file = stat.S_ISREG
    for sub in ("new", "cur"):
        with os.scandir(f"{base}/{sub}") as entries:
            for entry in entries:
                name = entry.name
                if name[0] == ".":
                    continue  # qmail's maildir_scan() skips dot files
                try:
                    info = entry.stat()
                except FileNotFoundError:
                    continue  # moved or removed by another client since readdir
                if is_file(info.st_mode):
                    uid = names.unique(name)
                    found.append((info.st_mtime_ns, uid, f"{sub}/{name}", info.st_size))
    found.sort()
    return found


def _read_index(base: str) -> dict[bytes, tuple[int, int]]:
    try:
        with open(f"{base}/{INDEX_FILE}", "rb") as stream:
            data = stream.read()
    except OSError:
        return {}
    body, _, trailer = data[:-1].rpartition(b"\n")
    if (
        not data.endswith(b"\n")
        or not body.startswith(_INDEX_VERSION + b"\n")
        or trailer != b"crc %08x" % zlib.crc32(body)
    ):
        return {}
    index = {}
    for line in body.split(b"\n")[1:]:
        fields = line.split(b"\t")
        if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
            index[fields[0]] = (int(fields[1]), int(fields[2]))
    return index


def _write_index(base: str, index: dict[bytes, tuple[int, int]]) -> None:
    lines = [_INDEX_VERSION, *(b"%s\t%d\t%d" % (k, d, w) for k, (d, w) in index.items())]
    body = b"\n".join(lines)
    data = body + b"\ncrc %08x\n" % zlib.crc32(body)
    tmp = f"{base}/tmp/{int(time.time())}.P{pid()}Q{next(_tmp_counter)}.{INDEX_FILE}"
    try:
        with open(tmp, "xb") as stream:
            stream.write(data)
        os.replace(tmp, f"{base}/{INDEX_FILE}")
    except OSError as exc:
        log.warning("maildir cannot write the POP3 size cache of %s: %s", base, exc)
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _wire_sizes(base: str, found: list[_Found]) -> list[int]:
    """Wire sizes from the cache, reading only the messages it does not know."""
    old = _read_index(base)
    new: dict[bytes, tuple[int, int]] = {}
    sizes = []
    encoding = sys.getfilesystemencoding()  # os.fsencode's, without a call per message
    for _mtime, uid, name, disk in found:
        key = uid.encode(encoding, "surrogateescape")
        cached = old.get(key)
        if cached is not None and cached[0] == disk:
            size = cached[1]
        else:
            try:
                size = wire_size(f"{base}/{name}")
            except OSError:
                sizes.append(disk)  # unreadable: RETR will answer the error
                continue
        sizes.append(size)
        if b"\t" not in key and b"\n" not in key:
            new[key] = (disk, size)
    if new != old:
        _write_index(base, new)
    return sizes


def _quota_size(name: str, disk: int) -> int:
    """Spec 19.5 / 21.2: the size in ``,S=<n>`` (the last one before the info), else disk."""
    digits = names.size_digits(name)
    return int(digits) if digits else disk


class Mailbox:
    """The numbered messages of one session, the DELE marks, and the UPDATE at QUIT."""

    def __init__(self, maildir: Path, messages: list[Message], disk_sizes: list[int]) -> None:
        self.maildir = maildir
        self.messages = messages
        self.last = 0  # LAST (RFC 1725): the highest message number DELE touched
        self._base = os.fspath(maildir)
        self._disk = disk_sizes
        self._deleted = [False] * len(messages)
        self._count = len(messages)
        self._octets = sum(m.size for m in messages)
        self._committed = False

    @classmethod
    def open(cls, maildir: Path, *, now: float | None = None) -> Mailbox:
        """Clean tmp/, scan, size; MailboxError with qmail-pop3d's text on failure."""
        base = os.fspath(maildir)
        if not os.path.isdir(base):
            raise MailboxError(NO_MAILDIR)
        clean_tmp(base, time.time() if now is None else now)
        try:
            found = _scan(base)
        except OSError as exc:
            raise MailboxError(SCAN_FAILED) from exc
        sizes = _wire_sizes(base, found)
        messages = [
            Message(number, name, uid, size)
            for number, ((_mtime, uid, name, _disk), size) in enumerate(
                zip(found, sizes, strict=True), start=1
            )
        ]
        return cls(Path(maildir), messages, [disk for *_rest, disk in found])

    @property
    def disk_sizes(self) -> list[int]:
        """The sizes on disk the scan saw, by message number - 1 (the mailbox broker's
        listing)."""
        return self._disk

    def stat(self) -> tuple[int, int]:
        """STAT: count and octets of the messages NOT deleted (the pop3d-stat fix, 19.5)."""
        return self._count, self._octets

    def get(self, n: int) -> Message:
        """Message ``n``, or MessageNumberError with qmail-pop3d's text."""
        if n < 1:
            raise MessageNumberError(COUNTED_FROM_1)
        if n > len(self.messages):
            raise MessageNumberError(NOT_THAT_MANY)
        if self._deleted[n - 1]:
            raise MessageNumberError(ALREADY_DELETED)
        return self.messages[n - 1]

    def is_deleted(self, n: int) -> bool:
        return self._deleted[n - 1]

    def undeleted(self) -> list[Message]:
        """What LIST and UIDL without an argument show."""
        return [m for m, gone in zip(self.messages, self._deleted, strict=True) if not gone]

    def delete(self, n: int) -> None:
        """DELE: mark only; LAST = max(LAST, n) (spec 19.5)."""
        message = self.get(n)
        self._deleted[n - 1] = True
        self._count -= 1
        self._octets -= message.size
        self.last = max(self.last, n)

    def reset(self) -> None:
        """RSET: undelete all, LAST = 0."""
        self._deleted = [False] * len(self.messages)
        self._count = len(self.messages)
        self._octets = sum(m.size for m in self.messages)
        self.last = 0

    def open_message(self, n: int) -> BinaryIO:
        """The stored bytes of message ``n`` (LF line ends as stored); OSError when it
        cannot be opened (the caller answers "-ERR unable to open that message").  A
        file an IMAP session renamed since the scan (flags, new/ -> cur/) is found again
        by its unique name."""
        message = self.get(n)
        try:
            return open(f"{self._base}/{message.name}", "rb")
        except FileNotFoundError:
            moved = self._relocate(message)
            if moved is None:
                raise
            return open(f"{self._base}/{moved}", "rb")

    def _relocate(self, message: Message) -> str | None:
        """The current ``cur/`` name of ``message`` (IMAP renames a file to change its
        flags, keeping its unique part), None if it is gone."""
        try:
            entries = os.listdir(f"{self._base}/cur")
        except OSError:
            return None
        for entry in entries:
            if names.unique(entry) == message.uid:
                return f"cur/{entry}"
        return None

    def read_small(self, n: int, limit: int) -> bytes | None:
        """All the stored bytes of message ``n`` if it has at most ``limit`` of them, else
        None (stream it from :meth:`open_message`; also when the scan saw more than
        ``limit``); OSError when it cannot be read.

        RETR's fast path: open, one read, close (a buffered ``open()`` adds an fstat, an
        ioctl, an lseek and a read that only finds EOF).  The read asks for one byte more
        than the size the scan saw, so getting exactly that size means the file ended there
        (a read from a regular file stops short only at its end); a file that changed since
        the scan is read on to its end."""
        path = f"{self._base}/{self.get(n).name}"
        expected = self._disk[n - 1]
        if expected > limit:
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            moved = self._relocate(self.get(n))
            if moved is None:
                raise
            fd = os.open(f"{self._base}/{moved}", os.O_RDONLY | os.O_CLOEXEC)
        return read_upto(fd, expected, limit)

    def top_lines(self, n: int, body_lines: int | None = None) -> Iterator[bytes]:
        """TOP: the header lines, the blank line, then ``body_lines`` body lines (all of
        them when None or beyond the body), each as stored, line end included.

        The file is opened now (OSError here, not mid-stream) and read line by line."""
        if body_lines is not None and body_lines < 0:
            raise ValueError("TOP line count must not be negative")
        return _top(self.open_message(n), body_lines)

    def commit(self) -> list[str]:
        """UPDATE at QUIT (spec 19.5); the unlink failures, empty when all went well.

        Every unlink is tried (qmail-pop3d goes on after a failure; the caller then answers
        "-ERR unable to unlink all deleted messages").  Undeleted messages still in new/ move
        to cur/ with ":2," appended; a failed rename is only logged, as qmail ignores it.
        Finally the freed size goes to maildirsize as "-<bytes> -<count>" (spec 21.2); a
        failure there is logged too: the file is an estimate, rebuilt when it looks wrong.
        A second call does nothing."""
        if self._committed:
            return []
        self._committed = True
        problems = []
        freed = removed = 0
        for index, message in enumerate(self.messages):
            path = f"{self._base}/{message.name}"
            if self._deleted[index]:
                try:
                    try:
                        os.unlink(path)
                    except FileNotFoundError:
                        moved = self._relocate(message)  # renamed by an IMAP session
                        if moved is None:
                            raise
                        os.unlink(f"{self._base}/{moved}")
                except OSError as exc:
                    problems.append(f"cannot unlink {message.name}: {exc.strerror}")
                    continue
                freed += _quota_size(message.name, self._disk[index])
                removed += 1
            elif message.name.startswith("new/"):
                try:
                    os.rename(path, f"{self._base}/cur/{message.name[4:]}{names.INFO}")
                except OSError as exc:
                    log.warning(
                        "maildir cannot move %s to cur/ in %s: %s", message.name, self._base, exc
                    )
        if removed:
            try:
                record(self.maildir, -freed, -removed)
            except OSError as exc:
                log.warning("maildir cannot update maildirsize of %s: %s", self._base, exc)
        return problems


def read_upto(fd: int, expected: int, limit: int) -> bytes | None:
    """The bytes of the open file ``fd`` (closed here) if at most ``limit``, else None;
    ``expected`` is the size the scan saw (:meth:`Mailbox.read_small`)."""
    try:
        data = os.read(fd, expected + 1)
        if len(data) == expected:
            return data
        pieces, size = [data], len(data)
        while size <= limit and (piece := os.read(fd, limit + 1 - size)):
            pieces.append(piece)
            size += len(piece)
    finally:
        os.close(fd)
    return b"".join(pieces) if size <= limit else None


def _top(stream: BinaryIO, body_lines: int | None) -> Iterator[bytes]:
    # qmail-pop3d's blast(): the header ends at the first empty line; a CRLF-stored
    # message's "\r\n" counts as empty too.
    with stream:
        in_header = True
        for line in stream:
            if not in_header and body_lines is not None:
                if body_lines == 0:
                    return
                body_lines -= 1
            yield line
            if in_header and line in (b"\n", b"\r\n"):
                in_header = False
