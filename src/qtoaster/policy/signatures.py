"""control/signatures: a streaming scanner for executable MIME attachments (spec 11).

This is Russ Nelson's qmail-smtpd-viruscan-1.3 ``put()``, as kept by indimail's smtpd.c
and qfilter, fed with the message as smtpd receives it (DataChunk: CRLF already LF,
dot-stuffing undone).  Lines are LF-terminated and capped at 1024 bytes (longer ones are
cut; the cut line then has no LF).  The scanner keeps the original's three states:
``_HEADER`` (a message or MIME part header), ``_FIRST`` (the line right after a header's
blank line: the only line compared with the signatures) and ``_BODY``.

Quirks kept on purpose, since they decide what the original rejects:

- the Content-Type value and the "last header was Content-Type" flag carry over from one
  header to the next (a part without its own Content-Type reuses the previous one);
- a type is message/rfc822 when it is a case-insensitive PREFIX of ``message/rfc822``
  (qmail's case_diffb compares only the type's length, so even an empty type counts;
  the literal's terminating NUL takes part too, longer types never match);
- ``boundary=`` is found only right after a ``;`` (blanks allowed), quoted or not;
- a body line is a delimiter when it starts with the current ``--boundary`` and is longer;
  it closes (pops) when two more ``-`` follow and the line is longer still;
- a boundary containing NUL compares only up to that NUL (str_diffn), and the pop scans
  back to the previous NUL: the stack is kept in the original's NUL-separated layout;
- a signature hits when it is a case-sensitive prefix strictly shorter than the line
  (the line still carries its LF); bounce texts set a flag that turns the next ``---``
  line into a header and makes the header after it end in header state again.

Invariants (what the original lacks): memory is bounded whatever the input: one line
(1024 bytes), the Content-Type value (``CONTENT_MAX``), and the boundary stack (at most
``DEPTH_MAX`` entries of at most 1024 bytes; longer entries are cut, which changes nothing
since such an entry can never match a 1024-byte line).  A push of the entry already on
top (a part header without Content-Type re-pushes the enclosing boundary) is counted, not
stored: the original's pop of that copy leaves the stack as it was, so a digest of many
parts is one level.  A push past ``DEPTH_MAX`` sets ``too_deep`` and ends the scan: the
parts below could not be scanned, so smtpd refuses the message (``TOO_DEEP``) rather than
pass it unscanned (issue 12: nesting was a way around the scan).  Once
in a body with no live boundary the scanner stops looking at bytes; in any other body it
jumps with ``bytes.find`` between the only lines that can matter (those starting with the
boundary, or with ``-`` after a bounce text).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from qtoaster.config.rolecontrols import load_signatures
from qtoaster.core.reply import Reply

# qmail-smtpd-viruscan-1.3 / indimail smtpd.c err_viruscan text (spec 11, 26).
EXECUTABLE = Reply(552, "we don't accept email with executable content (#5.3.4)")

LINE_MAX = 1024  # put(): "if (line.len < 1024) stralloc_catb(&line, ch, 1)"
CONTENT_MAX = 4096  # ours: the original lets folded Content-Type lines grow without end
DEPTH_MAX = 64  # ours: nested multiparts deeper than this are refused (TOO_DEEP)

# Ours: a message whose MIME nesting goes past DEPTH_MAX cannot be scanned whole.
TOO_DEEP = Reply(552, f"we don't accept email nested deeper than {DEPTH_MAX} MIME levels (#5.3.4)")

_HEADER, _FIRST, _BODY = 0, 1, 2  # the original's linespastheader values
_BLANKS = b" \t"
_TOKEN_END = b" \t;"
_RFC822 = b"message/rfc822\0"  # the C literal with its terminator, as case_diffb reads it
_BOUNCES = (
    b"Hi. This is the ",  # qmail-send bounce
    b"This message was created automatically by mail delivery software",  # Exim
)


def disabled_by(env: Mapping[str, str]) -> bool:
    """EXECUTABLEOK, with any value (even empty), turns the scan off (spec 11)."""
    return "EXECUTABLEOK" in env


class Signatures:
    """The loaded control/signatures; :meth:`scanner` gives a fresh per-message scanner."""

    __slots__ = ("entries",)

    def __init__(self, entries: Sequence[bytes]) -> None:
        self.entries = tuple(entries)

    @classmethod
    def load(cls, control_dir: Path) -> Signatures | None:
        """None when the file is missing or holds no signature (no scan, spec 11).

        Read as qmail's control_readfile: trailing blanks stripped, blank and ``#`` lines
        dropped; a line starting with NUL counts as blank and a NUL inside a line splits
        it (sigscheck walks the NUL-separated list).  A read error other than ENOENT is a
        ConfigError (qmail-smtpd: ``421 unable to read controls``).
        """
        entries = load_signatures(control_dir)
        return cls(entries) if entries else None

    def scanner(self) -> Scanner:
        return Scanner(self.entries)


class Scanner:
    """Feed the message in any chunks; ``found`` turns true on the first hit (sticky)."""

    __slots__ = (
        "_bounce",
        "_content",
        "_done",
        "_folds",
        "_line",
        "_live",
        "_needle",
        "_nl_needle",
        "_repeats",
        "_sigs",
        "_skip_line",
        "_stack",
        "_start",
        "_state",
        "matched",
        "too_deep",
    )

    def __init__(self, signatures: Sequence[bytes]) -> None:
        self._sigs = tuple(signatures)
        self._line = bytearray()  # the current line so far (at most LINE_MAX bytes)
        self._skip_line = False  # the current line cannot matter: drop it up to its LF
        self._state = _HEADER
        self._content = b""  # the last Content-Type value (field name and LF cut)
        self._folds = False  # the last header field was Content-Type (linetype 'C')
        self._stack = bytearray()  # NUL + "--boundary", one per open multipart
        self._repeats: list[int] = []  # per NUL in _stack: pushes of the same entry folded
        self._start = 0  # where the current boundary starts in _stack
        self._needle = b""  # what a delimiter line must start with
        self._nl_needle = b"\n"
        self._live = False  # a body line can still be a delimiter
        self._bounce = False  # flagqsbmf
        self._done = False  # nothing further can change the outcome
        self.matched: bytes | None = None  # the signature that hit, for the log line
        self.too_deep = False  # a push past DEPTH_MAX: not scanned whole (sticky)

    @property
    def found(self) -> bool:
        return self.matched is not None

    @property
    def retained(self) -> int:
        """Bytes held between feeds (bounded; for tests and monitoring)."""
        return len(self._line) + len(self._content) + len(self._stack) + len(self._needle)

    def feed(self, data: bytes) -> None:
        pos, end = 0, len(data)
        while pos < end and not self._done:
            if self._skip_line:
                newline = data.find(b"\n", pos)
                if newline < 0:
                    return
                pos, self._skip_line = newline + 1, False
                continue
            if not self._line and self._state == _BODY:
                pos = self._seek(data, pos)
                if pos == end:
                    return
            pos = self._take_line(data, pos)

    def _take_line(self, data: bytes, pos: int) -> int:
        """Add bytes up to the next LF to the line; run the line if it is complete."""
        newline = data.find(b"\n", pos)
        stop = len(data) if newline < 0 else newline + 1
        line = self._line
        if not line and newline >= 0:
            self._run(data[pos : min(stop, pos + LINE_MAX)])
            return stop
        room = LINE_MAX - len(line)
        if room > 0:
            line += data[pos : min(stop, pos + room)]
        if newline >= 0:
            self._run(bytes(line))
            line.clear()
        return stop

    def _seek(self, data: bytes, pos: int) -> int:
        """At a line start in a body: where the next line that may be a delimiter starts.

        Returns ``len(data)`` when the chunk holds none (its last partial line is kept
        only if it may still turn out to be one).
        """
        if self._bounce:  # a "---" line matters too: every line that matters starts with "-"
            needle, nl_needle = b"-", b"\n-"
        elif self._live:
            needle, nl_needle = self._needle, self._nl_needle
        else:
            self._done = True  # linespastheader stays 2 for good: no line can matter
            return len(data)
        if data.startswith(needle, pos):
            return pos
        found = data.find(nl_needle, pos)
        if found >= 0:
            return found + 1
        last = data.rfind(b"\n", pos)
        tail = data[last + 1 :] if last >= 0 else data[pos:]
        if needle.startswith(tail):
            self._line += tail  # may still become a delimiter in the next chunk
        else:
            self._skip_line = True
        return len(data)

    def _run(self, line: bytes) -> None:
        """One complete line (put() at '\\n')."""
        if self._state != _HEADER:
            self._body_line(line)
        elif len(line) == 1:
            self._end_of_header()
        elif line[0] in _BLANKS:
            if self._folds:
                self._content = (self._content + line[:-1])[:CONTENT_MAX]
        elif line[:13].lower() == b"content-type:":
            self._content = line[13:-1]
            self._folds = True
        else:
            self._folds = False

    def _end_of_header(self) -> None:
        self._state = _FIRST
        if self._bounce:
            self._bounce = False
            self._state = _HEADER
        if self._content:
            self._content_type(self._content)

    def _content_type(self, value: bytes) -> None:
        """message/rfc822 keeps header state; ``boundary=`` pushes ``--boundary``."""
        kind, pos = _token(value, 0, _TOKEN_END)
        if len(kind) <= len(_RFC822) and _RFC822.startswith(kind.lower()):
            self._state = _HEADER
        size = len(value)
        while (semicolon := value.find(b";", pos)) >= 0:
            pos = semicolon + 1
            while pos < size and value[pos] in _BLANKS:
                pos += 1
            if value[pos : pos + 9].lower() == b"boundary=":
                boundary, _ = _token(value, pos + 9, b"; \t", skip_blanks=False)
                self._push(b"--" + boundary)
                return

    def _body_line(self, line: bytes) -> None:
        current = len(self._stack) - self._start
        if current and line[0] == 0x2D and len(line) > current and line.startswith(self._needle):
            if len(line) > current + 2 and line[current : current + 2] == b"--":
                self._pop()
                self._state = _BODY
            else:
                self._state = _HEADER
        elif self._state == _FIRST:
            if line.startswith(_BOUNCES):
                self._bounce = True
            elif line.startswith(self._sigs):
                self._match(line)
            self._state = _BODY
        if self._bounce and line.startswith(b"---"):
            self._state = _HEADER

    def _match(self, line: bytes) -> None:
        for sig in self._sigs:  # file order, first hit wins (sigscheck)
            if len(sig) < len(line) and line.startswith(sig):
                self.matched = sig
                self._done = True
                return

    def _push(self, boundary: bytes) -> None:
        entry = boundary[:LINE_MAX]
        if self._repeats and 0 not in entry and self._stack[self._start :] == entry:
            # The original would append NUL + entry; its pop restores this very state.
            self._repeats[-1] += 1
            return
        if len(self._repeats) + entry.count(0) >= DEPTH_MAX:
            self.too_deep = True
            self._done = True
            return
        self._repeats += [0] * (1 + entry.count(0))
        self._stack.append(0)
        self._start = len(self._stack)
        self._stack += entry
        self._current_changed()

    def _pop(self) -> None:
        """The original's pop: cut before the current entry, scan back to the previous NUL."""
        if self._repeats and self._repeats[-1]:
            self._repeats[-1] -= 1  # a folded copy of the top entry: nothing changes
            return
        if self._repeats:
            self._repeats.pop()
        if self._start:
            del self._stack[self._start - 1 :]
        self._start = self._stack.rfind(0) + 1
        self._current_changed()

    def _current_changed(self) -> None:
        current = bytes(self._stack[self._start :])
        nul = current.find(0)  # str_diffn stops at a NUL both sides share
        self._needle = current if nul < 0 else current[: nul + 1]
        self._nl_needle = b"\n" + self._needle
        self._live = current[:1] == b"-"


def _token(value: bytes, pos: int, stops: bytes, skip_blanks: bool = True) -> tuple[bytes, int]:
    """A quoted string (to the next ``"`` or the end) or a bare token up to *stops*.

    Returns the token and where the scan stopped (at the closing quote, if any).
    """
    size = len(value)
    if skip_blanks:
        while pos < size and value[pos] in _BLANKS:
            pos += 1
    if pos < size and value[pos] == 0x22:
        start = pos + 1
        quote = value.find(b'"', start)
        pos = size if quote < 0 else quote
        return value[start:pos], pos
    start = pos
    while pos < size and value[pos] not in stops:
        pos += 1
    return value[start:pos], pos
