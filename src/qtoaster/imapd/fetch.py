"""FETCH responses, rendered in a worker thread and handed to the loop a slice at a time.

:func:`render` is a generator run in the executor: it opens the messages a batch at a
time (one broker round trip per :data:`BATCH` messages), parses each one only when an
item needs its structure (ENVELOPE, BODYSTRUCTURE, BODY[section]: the whole message,
BODY[] or RFC822, is converted from the file without parsing) and yields the response
bytes; :func:`pull` advances it until about :data:`SLICE` bytes are ready, so the
session writes them, waits for the client to drain, and pulls again
(:func:`pull_then_refresh` also makes the refresh that follows the command, in the last
pull's executor call). A body is never held whole beyond one message's section (a 50 MB
part streams in 64 KiB chunks).

Invariants: every ``* n FETCH (...)`` holds the items in the order asked, UID first when
the command was UID FETCH (RFC 9051 6.4.8: UID is always returned), FLAGS when a body
fetch set \\Seen; the files opened are closed whatever ends the generator; sizes of
literals are the bytes that follow them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from qtoaster.maildir.storeapi import Changes, MessageMeta, StoreError, View
from qtoaster.protocols.imap.commands import FetchItem, Section
from qtoaster.protocols.imap.encode import flag_list, imap_date
from qtoaster.protocols.imap.fetchdata import bodystructure, envelope
from qtoaster.protocols.imap.message import MimePart, parse_header, parse_message
from qtoaster.protocols.imap.section import (
    UnknownCte,
    binary_chunks,
    binary_size,
    message_chunks,
    section_chunks,
)

# Messages opened per round trip to the broker; bytes handed to the loop per pull.
BATCH = 64
SLICE = 256 * 1024
# Items that need the message's structure (and so its file).
_STRUCTURE = {"ENVELOPE", "BODYSTRUCTURE", "BODY"}
_CONTENT = {"BINARY", "BINARY.SIZE", "RFC822", "RFC822.HEADER", "RFC822.TEXT"}
_ALL = Section()


@dataclass(frozen=True, slots=True)
class Plan:
    """What to render for each message of one FETCH."""

    items: tuple[FetchItem, ...]
    uid: bool  # UID FETCH (or UID asked): UID comes first
    flags: bool  # FLAGS asked, or a body fetch set \\Seen
    modseq: bool  # MODSEQ asked, or CONDSTORE/CHANGEDSINCE
    recent: bool  # show \\Recent (IMAP4rev1)
    # Derived from ``items`` once per FETCH, not once per message.
    needs_file: bool = field(init=False)
    header_only: bool = field(init=False)  # ENVELOPE is the only item reading the file
    whole_only: bool = field(init=False)  # every item reading the file wants all of it

    def __post_init__(self) -> None:
        reading = [item for item in self.items if _needs_file(item)]
        object.__setattr__(self, "needs_file", bool(reading))
        object.__setattr__(self, "header_only", all(i.name == "ENVELOPE" for i in reading))
        object.__setattr__(self, "whole_only", all(_whole(i) for i in reading))


def _needs_file(item: FetchItem) -> bool:
    return item.name in _STRUCTURE or item.name in _CONTENT or item.section is not None


def _whole(item: FetchItem) -> bool:
    """BODY[] (or BODY.PEEK[]) or RFC822 without a partial: the whole message."""
    if item.partial is not None:
        return False
    return item.name == "RFC822" or (item.name == "BODY" and item.section == _ALL)


def render(view: View, positions: Sequence[tuple[int, MessageMeta]], plan: Plan) -> Iterator[bytes]:
    """``* seq FETCH (...)\\r\\n`` for each (sequence number, meta), in order."""
    for start in range(0, len(positions), BATCH):
        batch = positions[start : start + BATCH]
        files: list[BinaryIO | None] = (
            view.open_messages([meta.uid for _, meta in batch])
            if plan.needs_file
            else [None] * len(batch)
        )
        try:
            for (seq, meta), stream in zip(batch, files, strict=True):
                yield from _one(seq, meta, stream, plan)
        finally:
            for stream in files:
                if stream is not None:
                    stream.close()


def pull(gen: Iterator[bytes], limit: int = SLICE) -> tuple[list[bytes], bool]:
    """Advance ``gen`` until about ``limit`` bytes are out; (chunks, finished)."""
    out: list[bytes] = []
    size = 0
    for chunk in gen:
        out.append(chunk)
        size += len(chunk)
        if size >= limit:
            return out, False
    return out, True


def pull_then_refresh(
    gen: Iterator[bytes], view: View | None, limit: int = SLICE
) -> tuple[list[bytes], bool, Changes | None]:
    """:func:`pull`, and once the generator is finished the refresh of ``view`` (None:
    none is due) that follows the command, in the same executor call (one thread hop less
    per FETCH). A failing refresh is left to the session's own poll (None): the responses
    rendered are not lost."""
    out, done = pull(gen, limit)
    changes = None
    if done and view is not None:
        try:
            changes = view.refresh()
        except (StoreError, OSError):
            changes = None
    return out, done, changes


def _one(seq: int, meta: MessageMeta, stream: BinaryIO | None, plan: Plan) -> Iterator[bytes]:
    head = [b"* %d FETCH (" % seq]
    parts: list[bytes] = []
    if plan.uid:
        parts.append(b"UID %d" % meta.uid)
    if plan.flags:
        flags = sorted(meta.flags)
        if plan.recent and meta.recent:
            flags.append("\\Recent")
        parts.append(b"FLAGS " + flag_list(flags))
    if plan.modseq:
        parts.append(b"MODSEQ (%d)" % meta.modseq)
    tree: MimePart | None = None
    whole_only = plan.whole_only
    if stream is not None and plan.needs_file and not whole_only:
        # ENVELOPE alone reads only the header (the benchmark's FETCH 1:* (FLAGS ENVELOPE)).
        tree = parse_header(stream) if plan.header_only else parse_message(stream)
    pending = b"".join(head) + b" ".join(parts)
    sep = b" " if parts else b""
    for item in plan.items:
        name = item.name
        if name in ("UID", "FLAGS", "MODSEQ"):
            continue
        if name == "INTERNALDATE":
            pending += sep + b"INTERNALDATE " + imap_date(meta.internaldate)
        elif name == "RFC822.SIZE":
            pending += sep + b"RFC822.SIZE %d" % meta.size
        elif stream is not None and whole_only and _whole(item):
            size, chunks = message_chunks(stream)
            label = b"RFC822" if name == "RFC822" else b"BODY[]"
            pending += sep + label + b" {%d}\r\n" % size
            for chunk in chunks:
                pending += chunk
                if len(pending) > SLICE:
                    yield pending
                    pending = b""
        elif stream is None or tree is None:
            pending += sep + _empty(item)
        elif name == "ENVELOPE":
            pending += sep + b"ENVELOPE " + envelope(tree)
        elif name == "BODYSTRUCTURE":
            pending += sep + b"BODYSTRUCTURE " + bodystructure(tree, True)
        elif name == "BODY" and item.section is None:
            pending += sep + b"BODY " + bodystructure(tree, False)
        elif name == "BINARY.SIZE":
            part = item.section.part if item.section is not None else ()
            try:
                size = binary_size(stream, tree, part)
            except UnknownCte:
                size = 0
            pending += sep + b"BINARY.SIZE[" + _part_label(part) + b"] %d" % size
        else:
            label, size, chunks, eight = _content(stream, tree, item)
            pending += sep + label + (b" ~{%d}\r\n" if eight else b" {%d}\r\n") % size
            first = True
            for chunk in chunks:
                if first:
                    pending += chunk
                    first = False
                    if len(pending) > SLICE:
                        yield pending
                        pending = b""
                    continue
                if pending:
                    yield pending
                    pending = b""
                yield chunk
        sep = b" "
    yield pending + b")\r\n"


def _content(
    stream: BinaryIO, tree: MimePart, item: FetchItem
) -> tuple[bytes, int, Iterator[bytes], bool]:
    """(label, size, chunks, literal8) for BODY[...], BINARY[...] and the RFC822 items."""
    name = item.name
    if name in ("RFC822", "RFC822.HEADER", "RFC822.TEXT"):
        text = {"RFC822": "", "RFC822.HEADER": "HEADER", "RFC822.TEXT": "TEXT"}[name]
        size, chunks = section_chunks(stream, tree, Section(text=text), None)
        return name.encode(), size, chunks, False
    section = item.section or Section()
    origin = b"<%d>" % item.partial[0] if item.partial is not None else b""
    if name == "BINARY":
        data_size, data = binary_chunks(stream, tree, section.part, item.partial)
        body = b"".join(data)
        label = b"BINARY[" + _part_label(section.part) + b"]" + origin
        return label, data_size, iter((body,)), b"\x00" in body
    size, chunks = section_chunks(stream, tree, section, item.partial)
    return b"BODY[" + section_label(section) + b"]" + origin, size, chunks, False


def section_label(section: Section) -> bytes:
    """``1.2.HEADER.FIELDS (FROM TO)`` as the response names the section (RFC 9051 7.5.2)."""
    text = section.text
    if text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        text += " (" + " ".join(section.fields) + ")"
    part = _part_label(section.part)
    if part and text:
        return part + b"." + text.encode()
    return part or text.encode()


def _part_label(part: tuple[int, ...]) -> bytes:
    return ".".join(str(n) for n in part).encode()


def _empty(item: FetchItem) -> bytes:
    """What a message whose file vanished (expunged elsewhere) answers: NIL bodies."""
    if item.name in ("ENVELOPE", "BODYSTRUCTURE", "BODY") and item.section is None:
        return item.name.encode() + b" NIL"
    if item.section is not None:
        return b"BODY[" + section_label(item.section) + b"] NIL"
    return item.name.encode() + b" NIL"
