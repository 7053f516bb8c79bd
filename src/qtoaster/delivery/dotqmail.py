"""Parse a ``.qmail`` file into delivery instructions (dot-qmail(5), spec 16.2-16.3).

The rules are qmail-local.c's main loop (notqmail), line by line:

- lines end at ``\\n``; a last line without one still counts; ``\\r`` is data (a CRLF
  file gives commands and paths ending in ``\\r``, exactly as qmail-local sees them);
- trailing spaces and tabs are stripped, never past the start of the line (the
  qmail-local-tabs fix: vanilla could run backwards over the previous line);
- a line is a C string to qmail: it ends at the first NUL byte;
- blank line: ignored, except as the very first line -> temporary error;
- ``#`` comment; ``|`` program; ``&`` forward; ``.`` or ``/`` a file, a Maildir when the
  (stripped) line ends with ``/``, else an mbox; ``+list`` forward-only, other ``+``
  lines ignored; anything else is a forward address as written.

Invariants: ``parse`` is pure and raises nothing but DotQmailError; every value is
decoded with utf-8 ``surrogateescape`` so ``encode`` gives back the file's bytes.

One deliberate difference: qmail-local meets a forbidden program or file line while
executing, after the instructions above it ran; we refuse the whole file before
anything runs. The outcome (a temporary failure, retried) is the same, with fewer
duplicate deliveries.
"""

from __future__ import annotations

import enum
import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from qtoaster.core.envelope import decode
from qtoaster.core.errors import FormatError

# qmail-local.c's texts, byte for byte.
BLANK_FIRST_LINE = "Uh-oh: first line of .qmail file is blank. (#4.2.1)"
WRITABLE = "Uh-oh: .qmail file is writable. (#4.7.0)"
FILE_IN_FORWARD_ONLY = "Uh-oh: .qmail has file delivery but has x bit set. (#4.7.0)"
PROGRAM_IN_FORWARD_ONLY = "Uh-oh: .qmail has prog delivery but has x bit set. (#4.7.0)"

# conf-patrn: qmail's default is 002 (writable by others); the toaster's stricter
# choice, also refusing group-writable files, is ours (brief).
PATRN = 0o022

# open() errors that mean "no such .qmail file": qmail-local's qmeexists() treats every
# error but the temporary ones and EACCES/EPERM as a missing file.
_MISSING = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ENAMETOOLONG})


class Kind(enum.Enum):
    FORWARD = "forward"
    PROGRAM = "program"
    MAILDIR = "maildir"
    MBOX = "mbox"


@dataclass(frozen=True, slots=True)
class Instruction:
    kind: Kind
    value: str  # address (without '&'), command (without '|'), or path as written


@dataclass(frozen=True, slots=True)
class DotQmail:
    instructions: tuple[Instruction, ...]
    forward_only: bool  # '+list' seen, or the file is executable


class DotQmailError(FormatError):
    """A .qmail file qmail-local refuses; ``report`` is qmail's text."""

    def __init__(self, report: str, *, temporary: bool = True) -> None:
        super().__init__(report)
        self.report = report
        self.temporary = temporary


def parse(data: bytes, *, executable: bool = False) -> DotQmail:
    """The instructions of a .qmail file's contents (see the module docstring).

    ``executable``: the file has its user-execute bit set, so only forwards are allowed.
    Empty ``data`` gives no instructions (the caller uses the default delivery).
    """
    lines = data.split(b"\n")
    if data.endswith(b"\n") or not data:
        lines.pop()  # the text after the last newline is a line only if not empty
    forward_only = executable
    instructions: list[Instruction] = []
    for number, raw in enumerate(lines):
        line = raw.rstrip(b" \t")
        text = line.split(b"\0", 1)[0]  # what qmail-local's C string functions see
        first = text[:1]
        if not first:
            if number == 0:
                raise DotQmailError(BLANK_FIRST_LINE)
        elif first == b"+":
            forward_only = forward_only or text == b"+list"
        elif first in (b".", b"/"):
            if forward_only:
                raise DotQmailError(FILE_IN_FORWARD_ONLY)
            # The Maildir test looks at the stripped line's last byte, even past a NUL.
            kind = Kind.MAILDIR if line.endswith(b"/") else Kind.MBOX
            instructions.append(Instruction(kind, decode(text)))
        elif first == b"|":
            if forward_only:
                raise DotQmailError(PROGRAM_IN_FORWARD_ONLY)
            instructions.append(Instruction(Kind.PROGRAM, decode(text[1:])))
        elif first == b"&":
            instructions.append(Instruction(Kind.FORWARD, decode(text[1:])))
        elif first != b"#":
            instructions.append(Instruction(Kind.FORWARD, decode(text)))
    return DotQmail(tuple(instructions), forward_only)


def read_dotqmail(path: Path, *, patrn: int = PATRN) -> DotQmail | None:
    """Read and parse the .qmail file at ``path``; None when there is none to obey.

    None if it is missing, not a regular file (qmail-local's qmeexists) or empty (0
    bytes: default delivery, spec 16.2).  Raises DotQmailError (temporary) if its mode
    has a ``patrn`` bit or it cannot be opened or read.
    """
    try:
        # O_NONBLOCK like qmail's open_read: opening a FIFO must not hang the delivery.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in _MISSING:
            return None
        raise DotQmailError(_unable(path, exc)) from exc
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            return None
        if mode & patrn:
            raise DotQmailError(WRITABLE)
        os.set_blocking(fd, True)
        data = b"".join(iter(lambda: os.read(fd, 65536), b""))
    except OSError as exc:
        raise DotQmailError(_unable(path, exc)) from exc
    finally:
        os.close(fd)
    if not data:
        return None
    return parse(data, executable=bool(mode & stat.S_IXUSR))


def _unable(path: Path, exc: OSError) -> str:
    # qmail-local's temp_qmail(); it names the file relative to the home directory.
    return f"Unable to open {path.name}: {exc.strerror}. (#4.3.0)"
