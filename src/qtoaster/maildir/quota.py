"""Maildir++ quota: the ``maildirsize`` file that Courier, Dovecot and vpopmail share (spec 21).

Format (spec 21.1): line 1 is the quota definition (``10485760S``, ``5000000S,1000C``, or
empty for none); every further line is a ``<bytes> <count>`` delta, possibly negative; the
usage is the sum of the deltas.  Deliveries append ``<size> 1`` with one O_APPEND write, POP3
deletions append negative deltas; nothing is locked, so the file is an estimate that is
rebuilt from a scan of the Maildir when it looks wrong (spec 21.2).

Invariants:
- the file is only ever replaced whole: built in ``tmp/`` as
  ``<time>.<pid>_NeWmAiLdIrSiZe.<host>``, fsynced, renamed over ``maildirsize``;
- a Maildir++ folder (``.Sub/`` holding ``maildirfolder``) is charged to its parent's file;
- an I/O error is raised as OSError (the caller answers with a temporary failure), never
  taken for "over quota": the original patch had exactly that bug (spec 21.3 NOTE).  Only a
  missing ``maildirsize`` file (or a message or folder vanishing during a scan) is normal.
  Courier rebuilds an unreadable maildirsize; we raise instead, so a permission problem
  surfaces as a temporary failure rather than being papered over;
- reading is as tolerant as Courier's ``maildirsize_read``: text after a NUL is ignored, a
  delta line is read like ``sscanf("%ld %d")`` (junk counts as ``0 0`` but still counts as
  a line), and line 1 like Courier's ``qcalc`` (digit runs; ``C`` after one means a count,
  anything else bytes).
- a limit of 0 means "no limit" for that dimension, as in Courier's ``checkOneQuota`` and
  Dovecot; so :class:`Quota` holds only positive limits or None.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from qtoaster.core.errors import FormatError
from qtoaster.core.pid import pid
from qtoaster.maildir import names

MAX_LIMIT = 2**63 - 1  # off_t: what every Maildir++ implementation can hold
SIZE_FILE = "maildirsize"
FOLDER_MARK = "maildirfolder"
RECALC_SIZE = 5120  # Courier reads at most 5119 bytes; a bigger file forces a rebuild
YOUNG_SECONDS = 15 * 60  # one delta line younger than this is trusted even when over
_NAME_TRIES = 10


@dataclass(frozen=True, slots=True)
class Quota:
    bytes: int | None  # 'S' limit; None = no byte limit
    messages: int | None  # 'C' limit; None = no count limit

    def __post_init__(self) -> None:
        for value in (self.bytes, self.messages):
            if value is not None and not 0 < value <= MAX_LIMIT:
                raise ValueError(f"quota limit {value} is not in 1..{MAX_LIMIT}")

    @property
    def unlimited(self) -> bool:
        return self.bytes is None and self.messages is None

    def definition(self) -> str:
        """Line 1 of maildirsize: ``10485760S``, ``5000000S,1000C``; ``""`` if unlimited."""
        parts = []
        if self.bytes is not None:
            parts.append(f"{self.bytes}S")
        if self.messages is not None:
            parts.append(f"{self.messages}C")
        return ",".join(parts)


UNLIMITED = Quota(None, None)


@dataclass(frozen=True, slots=True)
class Usage:
    bytes: int
    messages: int


class QuotaSyntaxError(FormatError, ValueError):
    pass


# --- parsing quota texts -------------------------------------------------------------------

_MULTIPLIERS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}
_BYTES_PART = re.compile(r"([0-9]+)([KMG]?)[BS]?", re.ASCII | re.IGNORECASE)
_COUNT_PART = re.compile(r"([0-9]+)C", re.ASCII | re.IGNORECASE)
_DEF_PART = re.compile(r"([0-9]+)([SC]?)", re.ASCII)


def _limit(digits: str, multiplier: int, text: str) -> int | None:
    value = int(digits) * multiplier
    if value > MAX_LIMIT:
        raise QuotaSyntaxError(f"quota {text!r}: {value} is larger than {MAX_LIMIT}")
    return value or None


def _store(found: dict[str, int | None], kind: str, value: int | None, text: str) -> None:
    if kind in found:
        what = "byte" if kind == "S" else "message"
        raise QuotaSyntaxError(f"quota {text!r}: the {what} limit is given twice")
    found[kind] = value


def parse_quota(text: str) -> Quota:
    """An operator's or vpopmail's quota (spec 21.4): ``NOQUOTA``, ``5M``, ``1G``, ``512K``,
    ``5MB``, ``10485760``, ``10485760S``, ``10485760S,1000C``, ``1000C``.  K/M/G are powers of
    1024; a trailing B or S is ignored as vpopmail does; ``0`` means no limit."""
    stripped = text.strip()
    if stripped.upper() in ("", "NOQUOTA", "NONE"):
        return UNLIMITED
    found: dict[str, int | None] = {}
    for raw in stripped.split(","):
        part = raw.strip()
        if match := _COUNT_PART.fullmatch(part):
            _store(found, "C", _limit(match[1], 1, text), text)
        elif match := _BYTES_PART.fullmatch(part):
            multiplier = _MULTIPLIERS[match[2].upper()]
            _store(found, "S", _limit(match[1], multiplier, text), text)
        else:
            raise QuotaSyntaxError(
                f"quota {text!r}: {part!r} is not a size (like 5M, 512K, 1G, 10485760S) "
                "or a message count (like 1000C)"
            )
    return Quota(found.get("S"), found.get("C"))


def parse_definition(line: str) -> Quota:
    """Line 1 of maildirsize as written (spec 21.1): ``<n>S,<n>C``, a bare number is bytes."""
    stripped = line.strip()
    if not stripped:
        return UNLIMITED
    found: dict[str, int | None] = {}
    for part in stripped.split(","):
        match = _DEF_PART.fullmatch(part.strip())
        if match is None:
            raise QuotaSyntaxError(f"maildirsize quota {line!r}: {part!r} is not <n>S or <n>C")
        _store(found, match[2] or "S", _limit(match[1], 1, line), line)
    return Quota(found.get("S"), found.get("C"))


def _lenient_definition(line: bytes) -> Quota:
    """Line 1 read the way Courier's ``qcalc`` reads it: never fails (module docstring)."""
    limits: dict[bytes, int | None] = {}
    for digits, unit in re.findall(rb"([0-9]+)(C?)", line):
        limits[unit] = min(int(digits), MAX_LIMIT) or None
    return Quota(limits.get(b""), limits.get(b"C"))


# --- reading maildirsize ------------------------------------------------------------------

_DELTA = re.compile(rb"[ \t\n\v\f\r]*([+-]?[0-9]+)(?:[ \t\n\v\f\r]*([+-]?[0-9]+))?")


@dataclass(frozen=True, slots=True)
class _State:
    definition: bytes
    usage: Usage
    lines: int
    mtime: float
    size: int


def quota_root(maildir: Path) -> Path:
    """The Maildir whose maildirsize counts ``maildir``: the parent of a Maildir++ folder."""
    try:
        os.stat(maildir / FOLDER_MARK)
    except FileNotFoundError:
        return maildir
    if maildir.name in ("", ".", ".."):
        return maildir / ".."
    return maildir.parent


def _read(root: Path) -> _State | None:
    try:
        fd = os.open(root / SIZE_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        info = os.fstat(fd)
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks).split(b"\0", 1)[0]  # C string: a NUL ends the text
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # the newline ending the last line does not start another
    total = count = 0
    for line in lines[1:]:
        match = _DELTA.match(line)
        if match is not None:
            total += int(match[1])
            count += int(match[2] or 0)
    definition = lines[0] if lines else b""
    return _State(definition, Usage(total, count), len(lines[1:]), info.st_mtime, info.st_size)


def read_maildirsize(maildir: Path) -> tuple[Quota, Usage, int, float] | None:
    """(quota on line 1, usage = sum of the deltas, number of delta lines, file mtime), or
    None when there is no maildirsize.  A folder's file is its parent's (quota_root)."""
    state = _read(quota_root(maildir))
    if state is None:
        return None
    return _lenient_definition(state.definition), state.usage, state.lines, state.mtime


# --- scanning the Maildir -----------------------------------------------------------------


def _folders(root: Path) -> list[Path]:
    """The Maildir and its Maildir++ folders, ``.Trash`` excepted (spec 21.2)."""
    folders = [root]
    with os.scandir(root) as entries:
        for entry in entries:
            if entry.name.startswith(".") and entry.name != ".Trash" and entry.is_dir():
                folders.append(root / entry.name)
    return sorted(folders)


def _trashed(name: str) -> bool:
    """Courier's rule: the run of capitals after the first ``:2,`` holds a T."""
    return "T" in names.flags(name)


def _name_size(name: str) -> int | None:
    """Courier's ``maildir_parsequota``: digits after the last ``,S=`` before the ``:``."""
    digits = names.size_digits(name)
    if digits is None:
        return None
    return int(digits) if digits else 0


def _count_dir(directory: Path) -> tuple[int, Usage] | None:
    """(mtime_ns taken before listing, usage) of one new/ or cur/; None if it is missing."""
    try:
        mtime = os.stat(directory).st_mtime_ns
        names = os.listdir(directory)
    except FileNotFoundError:
        return None
    total = count = 0
    for name in names:
        if name.startswith(".") or _trashed(name):
            continue
        size = _name_size(name)
        if size is None:
            try:
                size = os.stat(directory / name).st_size
            except FileNotFoundError:
                continue  # expunged while we looked
        total += size
        count += 1
    return mtime, Usage(total, count)


def _scan(root: Path) -> tuple[Usage, dict[str, int]]:
    total = count = 0
    mtimes: dict[str, int] = {}
    for folder in _folders(root):
        for sub in ("new", "cur"):
            found = _count_dir(folder / sub)
            if found is not None:
                mtimes[str(folder / sub)] = found[0]
                total += found[1].bytes
                count += found[1].messages
    return Usage(total, count), mtimes


def _dir_mtimes(root: Path) -> dict[str, int]:
    mtimes: dict[str, int] = {}
    for folder in _folders(root):
        for sub in ("new", "cur"):
            try:
                mtimes[str(folder / sub)] = os.stat(folder / sub).st_mtime_ns
            except FileNotFoundError:
                pass
    return mtimes


# --- rebuilding, checking, recording ------------------------------------------------------


def newsize_name(now: float, hostname: str) -> str:
    """``<time>.<pid>_NeWmAiLdIrSiZe.<host>`` (Courier's makenewmaildirsizename); ``/`` and
    ``:`` in the host are escaped as maildir(5) asks, so the name stays one path element."""
    host = hostname.replace("/", "\\057").replace(":", "\\072")
    return f"{int(now)}.{pid()}_NeWmAiLdIrSiZe.{host}"


def _create_tmp(root: Path, now: float, hostname: str) -> tuple[int, Path]:
    # Courier sleeps 3 s and retries when the name exists; stepping the time in the name
    # gives the same uniqueness without the wait (two threads of one process, same second).
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    for step in range(_NAME_TRIES):
        path = root / "tmp" / newsize_name(now + step, hostname)
        try:
            return os.open(path, flags, 0o600), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no unused maildirsize name in {root / 'tmp'}")


def _write_file(root: Path, quota: Quota, usage: Usage, now: float, hostname: str) -> None:
    data = f"{quota.definition()}\n{usage.bytes} {usage.messages}\n".encode("ascii")
    fd, path = _create_tmp(root, now, hostname)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(path, root / SIZE_FILE)
    except BaseException:
        try:
            os.unlink(path)
        except OSError:
            pass
        raise


def _rebuild(root: Path, quota: Quota, hostname: str, now: float) -> tuple[Usage, bool]:
    """Scan, replace maildirsize; (usage, True if a directory changed during the scan).

    As in Courier the new file is installed even after a race: it is as good an estimate
    as any, and the next check that finds the user over quota scans again."""
    usage, before = _scan(root)
    _write_file(root, quota, usage, now, hostname)
    return usage, _dir_mtimes(root) != before


def recalculate(
    maildir: Path, quota: Quota, *, hostname: str, now: float | None = None
) -> Usage | None:
    """Rebuild maildirsize from a scan (spec 21.2); None if the Maildir changed meanwhile
    (Courier's EAGAIN: the caller lets the delivery through this time)."""
    stamp = time.time() if now is None else now
    usage, raced = _rebuild(quota_root(maildir), quota, hostname, stamp)
    return None if raced else usage


def fits(quota: Quota, usage: Usage, size: int, count: int = 1) -> bool:
    """Spec 21.2: over only when strictly above a limit (exactly equal is allowed)."""
    if quota.bytes is not None and usage.bytes + size > quota.bytes:
        return False
    return quota.messages is None or usage.messages + count <= quota.messages


def _usage(
    root: Path, quota: Quota, hostname: str, now: float, size: int, count: int
) -> tuple[Usage, bool]:
    """The usage to judge ``size``/``count`` by, rebuilding the file when the spec says so;
    the flag is True when a rebuild raced with a delivery (usage not trustworthy)."""
    state = _read(root)
    if (
        state is not None
        and state.definition == quota.definition().encode("ascii")
        and state.size < RECALC_SIZE
    ):
        if fits(quota, state.usage, size, count):
            return state.usage, False
        if state.lines == 1 and now < state.mtime + YOUNG_SECONDS:
            return state.usage, False  # freshly rebuilt: trust it, do not rescan each time
    return _rebuild(root, quota, hostname, now)


def check(
    maildir: Path, quota: Quota, size: int, *, hostname: str, now: float | None = None
) -> bool:
    """True if a message of ``size`` bytes fits.  The file is (re)built when missing, when
    its quota line is not ``quota`` (the directory is the source of truth for the limit),
    when >= 5120 bytes, or when over quota unless it is one fresh total line (spec 21.2)."""
    if quota.unlimited:
        return True
    stamp = time.time() if now is None else now
    usage, raced = _usage(quota_root(maildir), quota, hostname, stamp, size, 1)
    return raced or fits(quota, usage, size, 1)


def record(maildir: Path, size: int, count: int = 1) -> None:
    """Append ``<size> <count>`` in one O_APPEND write (negative for removals); a no-op
    when there is no maildirsize (no quota in force, spec 21.2)."""
    line = f"{size} {count}\n".encode("ascii")
    try:
        fd = os.open(quota_root(maildir) / SIZE_FILE, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        # One write keeps concurrent appenders' lines whole (O_APPEND, no locking: 21.1).
        written = os.write(fd, line)
    finally:
        os.close(fd)
    if written != len(line):
        raise OSError(f"short write to maildirsize: {written} of {len(line)} bytes")


def _percent(used: int, limit: int | None) -> int:
    if limit is None:
        return 0
    if used > limit:
        return 100  # Courier's checkOneQuota caps at 100
    return max(used, 0) * 100 // limit


def percent_used(maildir: Path, quota: Quota, *, hostname: str, now: float | None = None) -> int:
    """max(bytes%, count%) of the current usage, 0..100; 0 if unlimited (spec 21.2)."""
    if quota.unlimited:
        return 0
    stamp = time.time() if now is None else now
    usage, _ = _usage(quota_root(maildir), quota, hostname, stamp, 0, 0)
    return max(_percent(usage.bytes, quota.bytes), _percent(usage.messages, quota.messages))
