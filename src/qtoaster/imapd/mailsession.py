"""MailSession: the imapd commands of the AUTHENTICATED and SELECTED states, over a Store.

The session shell (imapd/session.py) greets, logs in and runs IDLE; once a user is logged
in it hands every other command to :meth:`MailSession.handle`, which answers it with its
untagged responses and its tagged completion. This module holds what every command
shares: the ENABLEd extensions, mailbox names on the wire, the selected folder's view and
how changes made elsewhere (delivery, POP3, other sessions) reach the client. The
commands themselves are in :mod:`qtoaster.imapd.folders` (folders, APPEND, STATUS,
QUOTA) and :mod:`qtoaster.imapd.selected` (FETCH, SEARCH, STORE, COPY, MOVE, EXPUNGE).

Invariants:
- every store call runs in the worker's executor, never on the event loop;
- the session's numbering (``uids``: the UID of each sequence number) changes only when
  the client is told: EXISTS for new messages, EXPUNGE (or VANISHED with QRESYNC) for gone
  ones; expunges found during a FETCH, STORE or SEARCH by sequence number wait for the
  next command that may send them (RFC 9051 7.5.1);
- a store refusal becomes ``NO [CODE] text``; a sequence number beyond the view ``BAD``;
  an unexpected OSError ``NO [SERVERBUG]`` and a log line, never a dropped session.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from qtoaster.imapd.sequence import SequenceError, compact
from qtoaster.maildir.storeapi import (
    SYSTEM_FLAGS,
    Changes,
    MessageMeta,
    Store,
    StoreError,
    UidValidityChanged,
    View,
)
from qtoaster.protocols.imap import commands as c
from qtoaster.protocols.imap.encode import astring, flag_list, mutf7_decode, mutf7_encode, quoted

if TYPE_CHECKING:
    from qtoaster.imapd.session import ImapSession

log = logging.getLogger("qtoaster.imapd")
T = TypeVar("T")

# What ENABLE may switch on (RFC 5161): QRESYNC implies CONDSTORE (RFC 7162 3.2.3).
ENABLABLE = ("CONDSTORE", "QRESYNC", "UTF8=ACCEPT", "IMAP4REV2")
# Commands by sequence number during which no EXPUNGE may be sent (RFC 9051 7.5.1).
_NO_EXPUNGE = (c.Fetch, c.Store, c.Search)


class MailSession:
    # What CAPABILITY adds after login (imapd/login.py shows them): what these handlers
    # implement.
    CAPABILITIES = (
        "NAMESPACE",
        "UNSELECT",
        "UIDPLUS",
        "MOVE",
        "CHILDREN",
        "LIST-EXTENDED",
        "LIST-STATUS",
        "SPECIAL-USE",
        "CREATE-SPECIAL-USE",
        "CONDSTORE",
        "QRESYNC",
        "ESEARCH",
        "SEARCHRES",
        "MULTIAPPEND",
        "BINARY",
        "STATUS=SIZE",
        "UTF8=ACCEPT",
        "QUOTA",
        "QUOTA=RES-STORAGE",
        "QUOTA=RES-MESSAGE",
    )
    __slots__ = (
        "conn",
        "enabled",
        "folders",
        "metas",
        "pending",
        "polled",
        "saved",
        "selected",
        "session",
        "store",
        "uids",
        "view",
        "watcher",
    )

    def __init__(self, session: ImapSession, store: Store, watcher: Any) -> None:
        from qtoaster.imapd.folders import FolderCommands
        from qtoaster.imapd.selected import SelectedCommands

        self.session = session
        self.conn = session.conn
        self.store = store
        self.watcher = watcher
        self.enabled: set[str] = set()
        self.view: View | None = None
        self.uids: list[int] = []  # the UID of each sequence number (1-based: uids[n-1])
        self.metas: list[MessageMeta] = []
        self.pending: set[int] = set()  # UIDs expunged elsewhere, not yet told
        self.saved: list[int] = []  # SEARCHRES (RFC 5182): UIDs of the last SAVE
        # The refresh a command already made in its last executor call (FETCH: one
        # thread hop less per command); poll() takes it instead of refreshing again.
        self.polled: Changes | None = None
        self.folders = FolderCommands(self)
        self.selected = SelectedCommands(self)

    # -- what the session shell calls ----------------------------------------------------
    async def handle(self, cmd: c.Command) -> None:
        """Answer one command completely (untagged responses, then the tagged one)."""
        body = cmd.body
        try:
            if isinstance(body, c.Enable):
                self._enable(cmd.tag, body)
            elif isinstance(body, (c.Noop, c.Check)):
                await self.poll()
                self.conn.tagged(cmd.tag, "OK", f"{type(body).__name__.upper()} completed")
            elif isinstance(body, c.Select):
                await self.select(cmd.tag, body)
            elif isinstance(body, (c.Close, c.Unselect)):
                await self.unselect(cmd.tag, expunge=isinstance(body, c.Close))
            elif isinstance(body, c.Compress):
                self.conn.tagged(cmd.tag, "NO", "COMPRESS is not offered", "CANNOT")
            elif isinstance(body, (c.Fetch, c.Store, c.Search, c.Copy, c.Move, c.Expunge)):
                status, text, code = await self.selected.handle(cmd)
                await self.poll(expunges=cmd.uid or not isinstance(body, _NO_EXPUNGE))
                self.conn.tagged(cmd.tag, status, text, code)
            else:
                status, text, code = await self.folders.handle(cmd)
                await self.poll()
                self.conn.tagged(cmd.tag, status, text, code)
        except StoreError as exc:
            self.conn.tagged(cmd.tag, "NO", exc.text, exc.code)
        except SequenceError as exc:
            self.conn.tagged(cmd.tag, "BAD", str(exc))
        except OSError as exc:
            log.error("imapd %s %s failed: %s", self.session.id, type(body).__name__.upper(), exc)
            self.conn.tagged(cmd.tag, "NO", "Internal error occurred, try again", "SERVERBUG")

    def watch_dirs(self) -> list[str]:
        return self.view.watch_dirs() if self.view is not None else []

    async def poll(self, *, expunges: bool = True) -> None:
        """Look at the selected folder again and tell the client what changed."""
        view = self.view
        if view is None:
            return
        changes, self.polled = self.polled, None
        if changes is None:
            try:
                changes = await self.run(view.refresh)
            except UidValidityChanged:
                log.warning(
                    "imapd %s UIDVALIDITY of %s changed: session ended", self.session.id, view.name
                )
                self.view = None
                self.session.bye("Mailbox UIDVALIDITY changed")
                raise
        self.apply(changes, expunges=expunges)

    async def close(self) -> None:
        view, self.view = self.view, None
        if view is not None:
            await self.run(view.close)

    # -- shared by the command modules -------------------------------------------------
    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.session.ctx.executor, fn, *args)

    @property
    def utf8(self) -> bool:
        return "UTF8=ACCEPT" in self.enabled or "IMAP4REV2" in self.enabled

    @property
    def rev2(self) -> bool:
        return "IMAP4REV2" in self.enabled

    @property
    def condstore(self) -> bool:
        return "CONDSTORE" in self.enabled

    @property
    def qresync(self) -> bool:
        return "QRESYNC" in self.enabled

    def name_in(self, wire: str) -> str:
        """A mailbox name as the client wrote it -> the store's name (INBOX any case)."""
        name = wire if self.utf8 else mutf7_or_raw(wire)
        name = name.rstrip(".") if name not in ("", ".") else name
        if name.upper() == "INBOX":
            return "INBOX"
        if not name or ".." in name or name.startswith(".") or "/" in name or "\x00" in name:
            raise StoreError("CANNOT", "Invalid mailbox name")
        return name

    def name_out(self, name: str) -> bytes:
        """The name as a response carries it: an atom when it can be, else quoted; UTF-8
        inside the quotes once the client accepts it (RFC 6855 3), modified UTF-7 before."""
        if not self.utf8:
            wire = mutf7_encode(name)
            return quoted(wire) if wire.upper() == "NIL" else astring(wire)
        if name.isascii():
            return quoted(name) if name.upper() == "NIL" else astring(name)
        escaped = name.replace("\\", "\\\\").replace('"', '\\"')
        return b'"' + escaped.encode("utf-8", "surrogateescape") + b'"'

    def require_view(self) -> View:
        if self.view is None:
            raise StoreError("CLIENTBUG", "No mailbox selected")
        return self.view

    def enable(self, capability: str) -> None:
        self.enabled.add(capability)
        if capability == "QRESYNC":
            self.enabled.add("CONDSTORE")

    # -- SELECT / EXAMINE, CLOSE / UNSELECT ----------------------------------------------
    async def select(self, tag: str, body: c.Select) -> None:
        if body.qresync is not None and not self.qresync:
            self.conn.tagged(tag, "BAD", "QRESYNC must be ENABLEd first")
            return
        name = self.name_in(body.mailbox)
        had = self.view is not None
        await self.close()
        self._forget()
        self.conn.state = _state("AUTHENTICATED")
        if had:
            self.conn.untagged("OK [CLOSED] Previous mailbox closed.")
        if body.condstore:
            self.enable("CONDSTORE")
        view = await self.run(self.store.select, name, body.readonly)
        self.view = view
        self.metas = list(view.messages)
        self.uids = [m.uid for m in self.metas]
        self._select_responses(name, view)
        if body.qresync is not None:
            await self._qresync(view, body.qresync)
        mode = "READ-ONLY" if view.readonly else "READ-WRITE"
        self.conn.state = _state("SELECTED")
        verb = "EXAMINE" if body.readonly else "SELECT"
        self.conn.tagged(tag, "OK", f"{verb} completed", mode)

    def _select_responses(self, name: str, view: View) -> None:
        keywords = sorted({f for m in self.metas for f in m.flags if not f.startswith("\\")})
        flags = flag_list([*SYSTEM_FLAGS, *keywords]).decode("utf-8", "surrogateescape")
        self.conn.untagged(f"FLAGS {flags}")
        permanent = "()" if view.readonly else flags[:-1] + " \\*)"
        self.conn.untagged(f"OK [PERMANENTFLAGS {permanent}] Flags permitted.")
        self.conn.untagged(f"{len(self.metas)} EXISTS")
        if not self.rev2:
            self.conn.untagged(f"{sum(1 for m in self.metas if m.recent)} RECENT")
            first = next((i for i, m in enumerate(self.metas, 1) if "\\Seen" not in m.flags), 0)
            if first:
                self.conn.untagged(f"OK [UNSEEN {first}] First unseen.")
        self.conn.untagged(f"OK [UIDVALIDITY {view.uidvalidity}] UIDs valid")
        self.conn.untagged(f"OK [UIDNEXT {view.uidnext}] Predicted next UID")
        self.conn.untagged(f"OK [HIGHESTMODSEQ {view.highestmodseq}] Highest")
        if self.rev2:
            self.conn.untagged(
                f'LIST () "." {self.name_out(name).decode("utf-8", "surrogateescape")}'
            )

    async def _qresync(
        self,
        view: View,
        params: tuple[int, int, c.SequenceSet | None, tuple[c.SequenceSet, c.SequenceSet] | None],
    ) -> None:
        from qtoaster.imapd.sequence import uid_members

        uidvalidity, modseq, known, _match = params
        if uidvalidity != view.uidvalidity:
            return  # the client's cache is void: it resyncs from scratch (RFC 7162 3.2.5)
        known_uids = None
        if known is not None:
            top = max(view.uidnext - 1, 1)
            known_uids = [
                u for lo, hi in uid_members(known, top) for u in range(lo, min(hi, top) + 1)
            ]
        vanished = await self.run(view.vanished, modseq, known_uids)
        if vanished:
            self.conn.untagged(f"VANISHED (EARLIER) {compact(vanished)}")
        for seq, meta in enumerate(self.metas, 1):
            if meta.modseq > modseq:
                self.conn.untagged_bytes(self.flags_response(seq, meta, uid=True) + b"\r\n")

    async def unselect(self, tag: str, *, expunge: bool) -> None:
        view = self.require_view()
        if expunge and not view.readonly:
            await self.run(view.expunge, None)
        await self.close()
        self._forget()
        self.conn.state = _state("AUTHENTICATED")
        verb = "CLOSE" if expunge else "UNSELECT"
        self.conn.tagged(tag, "OK", f"{verb} completed")

    def _forget(self) -> None:
        self.uids, self.metas, self.saved = [], [], []
        self.pending.clear()
        self.polled = None

    # -- changes made elsewhere ---------------------------------------------------------
    def apply(self, changes: Changes, *, expunges: bool = True) -> None:
        """Bring the numbering up to date and tell the client (EXPUNGE/VANISHED, FETCH
        FLAGS, EXISTS/RECENT)."""
        self.pending.update(changes.expunged)
        if expunges and self.pending:
            self._expunged(sorted(self.pending))
            self.pending.clear()
        if changes.flags:
            from bisect import bisect_left

            for meta in changes.flags:
                i = bisect_left(self.uids, meta.uid)
                if i < len(self.uids) and self.uids[i] == meta.uid:
                    self.metas[i] = meta
                    self.conn.untagged_bytes(self.flags_response(i + 1, meta, uid=True) + b"\r\n")
        fresh = [m for m in changes.added if not self.uids or m.uid > self.uids[-1]]
        if fresh:
            self.metas.extend(fresh)
            self.uids.extend(m.uid for m in fresh)
            self.conn.untagged(f"{len(self.uids)} EXISTS")
            if not self.rev2:
                self.conn.untagged(f"{sum(1 for m in self.metas if m.recent)} RECENT")

    def _expunged(self, gone: list[int]) -> None:
        gone_set = set(gone)
        positions = [i for i, uid in enumerate(self.uids) if uid in gone_set]
        if not positions:
            return
        if self.qresync:
            self.conn.untagged(f"VANISHED {compact(self.uids[i] for i in positions)}")
        else:
            # Highest first: each EXPUNGE renumbers only the messages after it.
            for i in reversed(positions):
                self.conn.untagged(f"{i + 1} EXPUNGE")
        keep = [i for i, uid in enumerate(self.uids) if uid not in gone_set]
        self.uids = [self.uids[i] for i in keep]
        self.metas = [self.metas[i] for i in keep]

    def flags_response(self, seq: int, meta: MessageMeta, *, uid: bool) -> bytes:
        """``* n FETCH (UID u FLAGS (...) MODSEQ (m))`` without its CRLF."""
        parts = [b"* %d FETCH (" % seq]
        if uid:
            parts.append(b"UID %d " % meta.uid)
        parts.append(b"FLAGS " + flag_list(self.shown_flags(meta)))
        if self.condstore:
            parts.append(b" MODSEQ (%d)" % meta.modseq)
        parts.append(b")")
        return b"".join(parts)

    def shown_flags(self, meta: MessageMeta) -> list[str]:
        flags = sorted(meta.flags)
        if meta.recent and not self.rev2:
            flags.append("\\Recent")
        return flags

    # -- ENABLE and the tagged answer ---------------------------------------------------
    def _enable(self, tag: str, body: c.Enable) -> None:
        done = []
        for cap in body.capabilities:
            cap = cap.upper()
            if cap in ENABLABLE and cap not in self.enabled:
                self.enable(cap)
                done.append(cap)
        self.conn.untagged("ENABLED" + "".join(" " + cap for cap in done))
        self.conn.tagged(tag, "OK", "ENABLE completed")


def mutf7_or_raw(wire: str) -> str:
    """A name a rev1 client sent, decoded from modified UTF-7 (as written when it is not
    valid modified UTF-7: some clients send raw UTF-8)."""
    try:
        return mutf7_decode(wire)
    except ValueError:
        return wire


def _state(name: str) -> Any:
    from qtoaster.protocols.imap.states import State

    return getattr(State, name)


# What a command module's handler returns: the tagged answer (status, text, code), sent
# after the folder was looked at again.
Done = tuple[str, str, str | None]
