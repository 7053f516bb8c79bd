"""The folder commands of an authenticated session: LIST/LSUB, CREATE, DELETE, RENAME,
SUBSCRIBE/UNSUBSCRIBE, NAMESPACE, STATUS, APPEND, GETQUOTA/GETQUOTAROOT.

Folder names use ``.`` as the hierarchy delimiter and one personal namespace without
prefix (``* NAMESPACE (("" ".")) NIL NIL``), as Dovecot lays out Maildir++. LIST follows
RFC 9051 6.3.9 with RFC 5258 (LIST-EXTENDED: several patterns, SUBSCRIBED and
SPECIAL-USE selection, RECURSIVEMATCH, CHILDREN/SUBSCRIBED/SPECIAL-USE return options),
RFC 5819 (LIST-STATUS) and RFC 6154 (SPECIAL-USE attributes). APPEND takes one message or
several (MULTIAPPEND, RFC 3502: all or none) and answers APPENDUID (RFC 4315). Quota is
the Maildir++ quota of the whole mailbox, one root named ``""`` (RFC 9208).

Each handler returns the tagged answer; :class:`~qtoaster.imapd.mailsession.MailSession`
sends it after telling the client what changed in the selected folder.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from qtoaster.imapd.mailsession import mutf7_or_raw
from qtoaster.imapd.sequence import compact
from qtoaster.maildir.storeapi import FolderInfo, FolderStatus, StoreError
from qtoaster.protocols.imap import commands as c

if TYPE_CHECKING:
    from qtoaster.imapd.mailsession import Done, MailSession

# STATUS items we answer (RFC 9051 6.3.11, RFC 8438 SIZE, RFC 7162 HIGHESTMODSEQ,
# RFC 7889 APPENDLIMIT); RECENT only for IMAP4rev1 clients.
STATUS_ITEMS = (
    "MESSAGES",
    "UIDNEXT",
    "UIDVALIDITY",
    "UNSEEN",
    "DELETED",
    "SIZE",
    "RECENT",
    "HIGHESTMODSEQ",
    "APPENDLIMIT",
)
SPECIAL_USE = ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")


class FolderCommands:
    __slots__ = ("mail",)

    def __init__(self, mail: MailSession) -> None:
        self.mail = mail

    async def handle(self, cmd: c.Command) -> Done:
        body = cmd.body
        mail = self.mail
        if isinstance(body, c.List):
            return await self.list(body)
        if isinstance(body, c.Namespace):
            mail.conn.untagged('NAMESPACE (("" ".")) NIL NIL')
            return ("OK", "NAMESPACE completed", None)
        if isinstance(body, c.Create):
            name = mail.name_in(body.mailbox)
            if name == "INBOX":
                raise StoreError("ALREADYEXISTS", "Mailbox already exists")
            bad = [u for u in body.special_use if u.capitalize() not in SPECIAL_USE]
            if bad:
                raise StoreError("USEATTR", f"Unsupported special-use attribute {bad[0]}")
            uses = tuple(u.capitalize() for u in body.special_use)
            await mail.run(mail.store.create, name, uses)
            return ("OK", "CREATE completed", None)
        if isinstance(body, c.Delete):
            name = mail.name_in(body.mailbox)
            if name == "INBOX":
                raise StoreError("CANNOT", "INBOX can't be deleted")
            await mail.run(mail.store.delete, name)
            return ("OK", "DELETE completed", None)
        if isinstance(body, c.Rename):
            old, new = mail.name_in(body.old), mail.name_in(body.new)
            if new == "INBOX":
                raise StoreError("ALREADYEXISTS", "Mailbox already exists")
            await mail.run(mail.store.rename, old, new)
            return ("OK", "RENAME completed", None)
        if isinstance(body, (c.Subscribe, c.Unsubscribe)):
            name = mail.name_in(body.mailbox)
            on = isinstance(body, c.Subscribe)
            await mail.run(mail.store.subscribe, name, on)
            return ("OK", f"{'SUBSCRIBE' if on else 'UNSUBSCRIBE'} completed", None)
        if isinstance(body, c.Status):
            name = mail.name_in(body.mailbox)
            status = await mail.run(mail.store.status, name)
            self._status_response(name, status, body.items)
            return ("OK", "STATUS completed", None)
        if isinstance(body, c.Append):
            return await self.append(body)
        if isinstance(body, (c.GetQuota, c.GetQuotaRoot)):
            return await self.quota(body)
        return ("BAD", "Command not valid in this state", "CLIENTBUG")

    # -- LIST --------------------------------------------------------------------------
    async def list(self, body: c.List) -> Done:
        mail = self.mail
        if not body.lsub and len(body.patterns) == 1 and body.patterns[0] == "":
            # RFC 9051 6.3.9: an empty pattern asks for the delimiter and the root.
            mail.conn.untagged('LIST (\\Noselect) "." ""')
            return ("OK", "LIST completed", None)
        folders = await mail.run(mail.store.folders)
        matchers = [_matcher(body.reference + p, mail) for p in body.patterns]
        subscribed_only = body.lsub or "SUBSCRIBED" in body.selection
        special_only = "SPECIAL-USE" in body.selection
        show_subscribed = "SUBSCRIBED" in body.returns or "SUBSCRIBED" in body.selection
        show_special = not body.selection or "SPECIAL-USE" in body.returns or special_only
        status_items = body.status_items if "STATUS" in body.returns else ()
        verb = "LSUB" if body.lsub else "LIST"
        for folder in folders:
            if not any(m(folder.name) for m in matchers):
                continue
            if subscribed_only and not folder.subscribed:
                continue
            if special_only and not folder.special_use:
                continue
            attrs = _attributes(folder, show_subscribed, show_special, body.lsub, subscribed_only)
            name = mail.name_out(folder.name).decode("utf-8", "surrogateescape")
            mail.conn.untagged(f'{verb} ({" ".join(attrs)}) "." {name}')
            if status_items and folder.selectable:
                try:
                    status = await mail.run(mail.store.status, folder.name)
                except StoreError:
                    continue
                self._status_response(folder.name, status, status_items)
        return ("OK", f"{verb} completed", None)

    def _status_response(self, name: str, status: FolderStatus, items: tuple[str, ...]) -> None:
        mail = self.mail
        values = {
            "MESSAGES": status.messages,
            "UIDNEXT": status.uidnext,
            "UIDVALIDITY": status.uidvalidity,
            "UNSEEN": status.unseen,
            "DELETED": status.deleted,
            "SIZE": status.size,
            "RECENT": status.recent,
            "HIGHESTMODSEQ": status.highestmodseq,
            "APPENDLIMIT": mail.session.ctx.settings.max_literal,
        }
        unknown = [i for i in items if i.upper() not in values]
        if unknown:
            raise StoreError("CLIENTBUG", f"Unknown STATUS item {unknown[0]}")
        if "HIGHESTMODSEQ" in (i.upper() for i in items):
            mail.enable("CONDSTORE")  # RFC 7162 3.1: a CONDSTORE-enabling command
        shown = " ".join(f"{i.upper()} {values[i.upper()]}" for i in items)
        out = mail.name_out(name).decode("utf-8", "surrogateescape")
        mail.conn.untagged(f"STATUS {out} ({shown})")

    # -- APPEND ------------------------------------------------------------------------
    async def append(self, body: c.Append) -> Done:
        mail = self.mail
        name = mail.name_in(body.mailbox)
        limit = mail.session.ctx.settings.max_literal
        uids: list[int] = []
        uidvalidity = 0
        for message in body.messages:
            if len(message.data) > limit:
                raise StoreError("TOOBIG", "Message too large")
            data = message.data.replace(b"\r\n", b"\n")
            date = message.date.timestamp() if message.date is not None else None
            flags = [f for f in message.flags if f.lower() != "\\recent"]
            try:
                uidvalidity, uid = await mail.run(mail.store.append, name, data, flags, date)
            except StoreError as exc:
                if exc.code == "NONEXISTENT":
                    raise StoreError("TRYCREATE", "Mailbox doesn't exist") from None
                raise
            uids.append(uid)
        code = f"APPENDUID {uidvalidity} {compact(uids)}"
        return ("OK", "APPEND completed", code)

    # -- QUOTA -------------------------------------------------------------------------
    async def quota(self, body: c.GetQuota | c.GetQuotaRoot) -> Done:
        mail = self.mail
        if isinstance(body, c.GetQuota) and body.root != "":
            raise StoreError("NONEXISTENT", "No such quota root")
        usage = await mail.run(mail.store.quota)
        limited = usage.storage_limit is not None or usage.messages_limit is not None
        if isinstance(body, c.GetQuotaRoot):
            name = mail.name_out(mail.name_in(body.mailbox)).decode("utf-8", "surrogateescape")
            mail.conn.untagged(f'QUOTAROOT {name} ""' if limited else f"QUOTAROOT {name}")
        if limited:
            resources = []
            if usage.storage_limit is not None:
                # RFC 9208 5.1: STORAGE in units of 1024 octets.
                resources.append(
                    f"STORAGE {usage.storage_used // 1024} {usage.storage_limit // 1024}"
                )
            if usage.messages_limit is not None:
                resources.append(f"MESSAGE {usage.messages_used} {usage.messages_limit}")
            mail.conn.untagged(f'QUOTA "" ({" ".join(resources)})')
        elif isinstance(body, c.GetQuota):
            raise StoreError("NONEXISTENT", "No quota set")
        verb = "GETQUOTA" if isinstance(body, c.GetQuota) else "GETQUOTAROOT"
        return ("OK", f"{verb} completed", None)


def _matcher(pattern: str, mail: MailSession) -> Callable[[str], bool]:
    """A predicate for LIST's pattern: ``*`` any characters, ``%`` any but the delimiter;
    INBOX matches in any case (RFC 9051 6.3.9)."""
    name = pattern if mail.utf8 else mutf7_or_raw(pattern)
    rx = "".join(".*" if ch == "*" else "[^.]*" if ch == "%" else re.escape(ch) for ch in name)
    compiled = re.compile(rx + r"\Z", re.DOTALL)
    inbox = re.compile(rx + r"\Z", re.DOTALL | re.IGNORECASE)

    def match(folder: str) -> bool:
        if folder == "INBOX":
            return inbox.match(folder) is not None
        return compiled.match(folder) is not None

    return match


def _attributes(
    folder: FolderInfo, subscribed: bool, special: bool, lsub: bool, by_subscription: bool
) -> list[str]:
    attrs: list[str] = []
    if not folder.selectable:
        # RFC 5258 3: \NonExistent for a subscription whose folder is gone; a parent that
        # exists only as part of a deeper name is \Noselect (as Dovecot answers).
        attrs.append("\\NonExistent" if by_subscription and not lsub else "\\Noselect")
    if not lsub:
        attrs.append("\\HasChildren" if folder.has_children else "\\HasNoChildren")
    if subscribed and folder.subscribed and not lsub:
        attrs.append("\\Subscribed")
    if special:
        attrs.extend(folder.special_use)
    return attrs
