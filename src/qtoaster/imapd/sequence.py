"""Sequence sets against a selected folder: numbers and UIDs in, UIDs out, and back.

Pure helpers of the imapd session (RFC 9051 9 ``sequence-set``): resolving a parsed
:class:`~qtoaster.protocols.imap.commands.SequenceSet` (``*``, reversed ranges, ``$``)
against the ascending UIDs of the session's view, and writing UID sets compactly
(``1:3,7``) for COPYUID, APPENDUID, VANISHED and ESEARCH.

Invariants: results are ascending and without duplicates; a message number beyond the
view is an error (:class:`SequenceError`, the session answers BAD) while a UID beyond it
is simply absent (RFC 9051 6.4.9: UID ranges name what exists).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence

from qtoaster.core.errors import FormatError
from qtoaster.protocols.imap.commands import STAR, SequenceSet


class SequenceError(FormatError, ValueError):
    """A message sequence number the view does not have (``BAD`` for the command)."""


def resolve_numbers(
    seq: SequenceSet, count: int, saved: Sequence[int], uids: Sequence[int]
) -> list[int]:
    """0-based positions of the messages ``seq`` names by sequence number; ``saved`` is
    the SEARCHRES result (UIDs), turned into positions of those still present."""
    if seq.saved:
        return [i for i in (_position(uids, uid) for uid in saved) if i is not None]
    picked: set[int] = set()
    for low, high in seq.ranges:
        low = count if low == STAR else low
        high = count if high == STAR else high
        if low > high:
            low, high = high, low
        if count == 0 or high > count or low < 1:
            raise SequenceError("Invalid messageset")
        if len(seq.ranges) == 1:
            return list(range(low - 1, high))
        picked.update(range(low - 1, high))
    return sorted(picked)


def resolve_uids(seq: SequenceSet, uids: Sequence[int], saved: Sequence[int]) -> list[int]:
    """0-based positions of the messages whose UIDs ``seq`` names (``*`` is the largest
    UID; a range beyond every UID still names the last message, RFC 9051 6.4.9)."""
    if seq.saved:
        return [i for i in (_position(uids, uid) for uid in saved) if i is not None]
    if not uids:
        return []
    top = uids[-1]
    if len(seq.ranges) == 1:
        low, high = _bounds(seq.ranges[0], top)
        return list(range(bisect_left(uids, low), bisect_right(uids, high)))
    picked: set[int] = set()
    for pair in seq.ranges:
        low, high = _bounds(pair, top)
        picked.update(range(bisect_left(uids, low), bisect_right(uids, high)))
    return sorted(picked)


def uid_members(seq: SequenceSet, top: int) -> list[tuple[int, int]]:
    """The UID ranges ``seq`` names, normalised (for QRESYNC's known-UIDs, which may name
    UIDs the view no longer has)."""
    return [_bounds(pair, top) for pair in seq.ranges]


def _bounds(pair: tuple[int, int], top: int) -> tuple[int, int]:
    low, high = pair
    low = top if low == STAR else low
    high = top if high == STAR else high
    return (low, high) if low <= high else (high, low)


def _position(uids: Sequence[int], uid: int) -> int | None:
    i = bisect_left(uids, uid)
    return i if i < len(uids) and uids[i] == uid else None


def compact(numbers: Iterable[int]) -> str:
    """``1:3,7,9:10`` for ascending (or any) numbers; empty for none."""
    out: list[str] = []
    start = prev = -2
    for n in sorted(set(numbers)):
        if n == prev + 1:
            prev = n
            continue
        if start >= 0:
            out.append(str(start) if start == prev else f"{start}:{prev}")
        start = prev = n
    if start >= 0:
        out.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(out)
