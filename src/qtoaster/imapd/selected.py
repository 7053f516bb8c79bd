"""The commands of the SELECTED state: FETCH, SEARCH, STORE, COPY, MOVE, EXPUNGE (and
their UID forms, RFC 9051 6.4), with CONDSTORE/QRESYNC (RFC 7162), UIDPLUS (RFC 4315),
ESEARCH (RFC 4731) and SEARCHRES (RFC 5182).

FETCH renders in the executor (imapd/fetch.py) and streams; SEARCH evaluates there too,
opening a message file only when a key needs its header or body. A body fetch without
PEEK sets \\Seen first (in a read-write folder) and shows the new FLAGS.

Each handler returns the tagged answer; MailSession sends it after telling the client
what changed (the expunges of MOVE and EXPUNGE come out that way).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, BinaryIO

from qtoaster.imapd import fetch
from qtoaster.imapd.sequence import compact, resolve_numbers, resolve_uids
from qtoaster.maildir.storeapi import SEEN, MessageMeta, StoreError, View
from qtoaster.protocols.imap import commands as c
from qtoaster.protocols.imap.message import MimePart, parse_header, parse_message
from qtoaster.protocols.imap.search import SearchContext, evaluate, needs

if TYPE_CHECKING:
    from qtoaster.imapd.mailsession import Done, MailSession

# Body items that set \Seen unless PEEKed (RFC 9051 6.4.5).
_SEEN_ITEMS = ("RFC822", "RFC822.TEXT", "BODY", "BINARY")
_CHARSETS = ("UTF-8", "US-ASCII")


class SelectedCommands:
    __slots__ = ("mail",)

    def __init__(self, mail: MailSession) -> None:
        self.mail = mail

    def positions(self, seq: c.SequenceSet, uid: bool) -> list[int]:
        mail = self.mail
        if uid:
            return resolve_uids(seq, mail.uids, mail.saved)
        return resolve_numbers(seq, len(mail.uids), mail.saved, mail.uids)

    async def handle(self, cmd: c.Command) -> Done:
        body = cmd.body
        view = self.mail.require_view()
        if isinstance(body, c.Fetch):
            return await self.fetch(view, body, cmd.uid)
        if isinstance(body, c.Search):
            return await self.search(view, cmd.tag, body, cmd.uid)
        if isinstance(body, c.Store):
            return await self.store(view, body, cmd.uid)
        if isinstance(body, (c.Copy, c.Move)):
            return await self.copy(view, body, cmd.uid)
        if isinstance(body, c.Expunge):
            if view.readonly:
                raise StoreError("READ-ONLY", "Mailbox is read-only")
            uids = None
            if body.uids is not None:
                uids = [self.mail.uids[i] for i in self.positions(body.uids, True)]
            await self.mail.run(view.expunge, uids)
            return ("OK", "EXPUNGE completed", None)
        return ("BAD", "Command not valid in this state", "CLIENTBUG")

    # -- FETCH -------------------------------------------------------------------------
    async def fetch(self, view: View, body: c.Fetch, uid: bool) -> Done:
        mail = self.mail
        picked = self.positions(body.sequence, uid)
        if body.changedsince is not None:
            mail.enable("CONDSTORE")
            picked = [i for i in picked if mail.metas[i].modseq > body.changedsince]
            if body.vanished:
                if not (uid and mail.qresync):
                    return ("BAD", "VANISHED needs UID FETCH and QRESYNC", "CLIENTBUG")
                wanted = [mail.uids[i] for i in self.positions(body.sequence, True)]
                gone = await mail.run(view.vanished, body.changedsince, None)
                top = mail.uids[-1] if mail.uids else 0
                gone = [u for u in gone if u <= top or not wanted]
                if gone:
                    mail.conn.untagged(f"VANISHED (EARLIER) {compact(gone)}")
        names = {item.name for item in body.items}
        if "MODSEQ" in names:
            mail.enable("CONDSTORE")
        flags = "FLAGS" in names
        if not view.readonly and any(
            item.name in _SEEN_ITEMS
            and not item.peek
            and (item.name != "BODY" or item.section is not None)
            for item in body.items
        ):
            unseen = [mail.uids[i] for i in picked if SEEN not in mail.metas[i].flags]
            if unseen:
                await self._set(view, unseen, "+", [SEEN], None)
                flags = True
        plan = fetch.Plan(
            items=body.items,
            uid=uid or "UID" in names,
            flags=flags,
            # MODSEQ and CHANGEDSINCE enabled CONDSTORE above; once on, every FETCH shows it.
            modseq=mail.condstore,
            recent=not mail.rev2,
        )
        work = [(i + 1, mail.metas[i]) for i in picked]
        gen = fetch.render(view, work, plan)
        done = False
        while not done:
            chunks, done, polled = await mail.run(fetch.pull_then_refresh, gen, view)
            if polled is not None:
                mail.polled = polled
            for chunk in chunks:
                mail.conn.untagged_bytes(chunk)
            await mail.session.drain()
        return ("OK", "FETCH completed", None)

    async def _set(
        self,
        view: View,
        uids: Sequence[int],
        mode: str,
        flags: Sequence[str],
        unchangedsince: int | None,
    ) -> tuple[list[MessageMeta], list[int]]:
        changed, failed = await self.mail.run(view.store, uids, mode, flags, unchangedsince)
        mail = self.mail
        from bisect import bisect_left

        for meta in changed:
            i = bisect_left(mail.uids, meta.uid)
            if i < len(mail.uids) and mail.uids[i] == meta.uid:
                mail.metas[i] = meta
        return changed, failed

    # -- STORE -------------------------------------------------------------------------
    async def store(self, view: View, body: c.Store, uid: bool) -> Done:
        mail = self.mail
        if view.readonly:
            raise StoreError("READ-ONLY", "Mailbox is read-only")
        if body.unchangedsince is not None:
            mail.enable("CONDSTORE")
        picked = self.positions(body.sequence, uid)
        uids = [mail.uids[i] for i in picked]
        flags = [f for f in body.flags if f.lower() != "\\recent"]
        changed, failed = await self._set(view, uids, body.mode, flags, body.unchangedsince)
        failed_set = set(failed)
        if not body.silent or mail.condstore:
            from bisect import bisect_left

            shown = (
                changed
                if body.silent
                else [mail.metas[i] for i in picked if mail.uids[i] not in failed_set]
            )
            for meta in shown:
                i = bisect_left(mail.uids, meta.uid)
                mail.conn.untagged_bytes(mail.flags_response(i + 1, meta, uid=uid) + b"\r\n")
        if failed:
            if uid:
                modified = compact(failed)
            else:
                modified = compact(i + 1 for i, u in enumerate(mail.uids) if u in failed_set)
            return ("OK", "Conditional STORE failed", f"MODIFIED {modified}")
        return ("OK", "STORE completed", None)

    # -- COPY / MOVE -------------------------------------------------------------------
    async def copy(self, view: View, body: c.Copy | c.Move, uid: bool) -> Done:
        mail = self.mail
        move = isinstance(body, c.Move)
        if move and view.readonly:
            raise StoreError("READ-ONLY", "Mailbox is read-only")
        dest = mail.name_in(body.mailbox)
        uids = [mail.uids[i] for i in self.positions(body.sequence, uid)]
        verb = "MOVE" if move else "COPY"
        if not uids:
            return ("OK", f"{verb} completed", None)
        try:
            result = await mail.run(view.move if move else view.copy, uids, dest)
        except StoreError as exc:
            if exc.code == "NONEXISTENT":
                raise StoreError("TRYCREATE", "Mailbox doesn't exist") from None
            raise
        pairs = f"{compact(result.source_uids)} {compact(result.dest_uids)}"
        code = f"COPYUID {result.uidvalidity} {pairs}"
        if move:
            # RFC 6851 3.3: COPYUID in an untagged OK before the expunges.
            mail.conn.untagged(f"OK [{code}] Moved")
            return ("OK", "MOVE completed", None)
        return ("OK", "COPY completed", code)

    # -- SEARCH ------------------------------------------------------------------------
    async def search(self, view: View, tag: str, body: c.Search, uid: bool) -> Done:
        mail = self.mail
        if body.charset is not None and body.charset.upper() not in _CHARSETS:
            return ("NO", "Unsupported charset", "BADCHARSET (UTF-8 US-ASCII)")
        modseq_key = _has_modseq(body.keys)
        if modseq_key:
            mail.enable("CONDSTORE")
        found = await mail.run(self._evaluate, view, body.keys)
        uids = [mail.uids[i] for i in found]
        numbers = uids if uid else [i + 1 for i in found]
        highest = max((mail.metas[i].modseq for i in found), default=0)
        returns = body.returns
        if returns is not None and "SAVE" in returns:
            mail.saved = uids
        esearch = returns is not None or mail.rev2
        if not esearch:
            text = "SEARCH" + "".join(f" {n}" for n in numbers)
            if modseq_key and numbers:
                text += f" (MODSEQ {highest})"
            mail.conn.untagged(text)
            return ("OK", "SEARCH completed", None)
        asked = [r for r in (returns or ()) if r != "SAVE"]
        if returns is None or (not asked and "SAVE" not in (returns or ())):
            asked = ["ALL"]
        out = [f'ESEARCH (TAG "{tag}")'] + (["UID"] if uid else [])
        if numbers:
            for option in ("MIN", "MAX", "ALL", "COUNT"):
                if option not in asked:
                    continue
                if option == "MIN":
                    out.append(f"MIN {numbers[0]}")
                elif option == "MAX":
                    out.append(f"MAX {numbers[-1]}")
                elif option == "ALL":
                    out.append(f"ALL {compact(numbers)}")
                elif option == "COUNT":
                    out.append(f"COUNT {len(numbers)}")
            if modseq_key:
                out.append(f"MODSEQ {highest}")
        elif "COUNT" in asked:
            out.append("COUNT 0")
        mail.conn.untagged(" ".join(out))
        return ("OK", "SEARCH completed", None)

    def _evaluate(self, view: View, keys: tuple[c.SearchKey, ...]) -> list[int]:
        """Positions matching ``keys`` (runs in the executor)."""
        mail = self.mail
        metas = list(mail.metas)
        uids = list(mail.uids)
        level = needs(keys)
        parse = parse_header if level == "header" else parse_message
        saved = set(mail.saved)
        now = time.time()
        found: list[int] = []
        for start in range(0, len(metas), fetch.BATCH):
            batch = range(start, min(start + fetch.BATCH, len(metas)))
            files: list[BinaryIO | None]
            if level == "meta":
                files = [None] * len(batch)
            else:
                files = view.open_messages([uids[i] for i in batch])
            try:
                for i, stream in zip(batch, files, strict=True):
                    ctx = SearchContext(
                        seq=i + 1,
                        meta=metas[i],
                        max_seq=len(metas),
                        max_uid=uids[-1] if uids else 0,
                        saved=saved,
                        load=None if stream is None else _loader(stream, parse),
                        now=now,
                    )
                    if evaluate(keys, ctx):
                        found.append(i)
            finally:
                for stream in files:
                    if stream is not None:
                        stream.close()
        return found


def _loader(
    stream: BinaryIO, parse: Callable[[BinaryIO], MimePart]
) -> Callable[[], tuple[BinaryIO, MimePart]]:
    def load() -> tuple[BinaryIO, MimePart]:
        return stream, parse(stream)

    return load


def _has_modseq(keys: Sequence[c.SearchKey]) -> bool:
    return any(k.name == "MODSEQ" or _has_modseq(k.children) for k in keys)
