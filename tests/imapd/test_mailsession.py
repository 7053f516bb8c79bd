"""The mail handlers (imapd/mailsession.py and its command modules) against a real store on
a temporary Maildir, through the real engine: commands in as bytes, answers out as bytes.

The session shell around them (login, TLS, IDLE) is tests/integration's; here a small
stand-in gives the handlers what they use of it (the engine, the executor, drain)."""

from __future__ import annotations

import asyncio
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from qtoaster.imapd.mailsession import MailSession
from qtoaster.maildir.create import make_maildir
from qtoaster.maildir.fs import LocalFs
from qtoaster.maildir.store import MaildirStore
from qtoaster.protocols.imap import commands as c
from qtoaster.protocols.imap.server import NEED_DATA, ImapConnection, State

MESSAGE = (
    b"From: Alice <alice@example.test>\nTo: bob@example.test\nSubject: hello %d\n"
    b"Message-ID: <m%d@example.test>\nDate: Mon, 7 Dec 2026 10:00:00 +0000\n\nbody number %d\n"
)


@dataclass
class _Settings:
    max_literal: int = 1 << 20


@dataclass
class _Ctx:
    executor: ThreadPoolExecutor
    settings: _Settings


class _Session:
    def __init__(self, executor: ThreadPoolExecutor) -> None:
        self.conn = ImapConnection(max_literal=1 << 20)
        self.conn.state = State.AUTHENTICATED
        self.ctx = _Ctx(executor, _Settings())
        self.id = "test"
        self.user = "bob@example.test"

    async def drain(self) -> None:
        return None

    def bye(self, text: str) -> None:
        self.conn.untagged(f"BYE {text}")
        self.conn.close_after_send()


class Client:
    def __init__(self, maildir: Path) -> None:
        self.executor = ThreadPoolExecutor(2)
        self.session = _Session(self.executor)
        fs = LocalFs(maildir, hostname="mx.example.test", quota=None)
        self.store = MaildirStore(fs)
        self.store.prepare()
        self.mail = MailSession(self.session, self.store, None)  # type: ignore[arg-type]

    async def __call__(self, line: bytes) -> list[bytes]:
        conn = self.session.conn
        conn.receive_data(line)
        out = b""
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                break
            assert isinstance(event, c.Command), event
            await self.mail.handle(event)
            out += conn.data_to_send()
        out += conn.data_to_send()
        return out.split(b"\r\n")[:-1] if out.endswith(b"\r\n") else [out]


def deliver(maildir: Path, n: int) -> None:
    for i in range(1, n + 1):
        (maildir / "new" / f"1700000000.M{i}P1.mx,S=100").write_bytes(MESSAGE % (i, i, i))


@pytest.fixture
def maildir(tmp_path: Path) -> Path:
    path = tmp_path / "Maildir"
    make_maildir(path)
    return path


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_select_fetch_store_search(maildir: Path) -> None:
    deliver(maildir, 3)

    async def go() -> None:
        cl = Client(maildir)
        out = await cl(b"a SELECT INBOX\r\n")
        assert b"* 3 EXISTS" in out and b"* 3 RECENT" in out
        assert any(x.startswith(b"* OK [UIDVALIDITY ") for x in out)
        assert out[-1] == b"a OK [READ-WRITE] SELECT completed"
        out = await cl(b"b FETCH 1:* (UID FLAGS ENVELOPE RFC822.SIZE)\r\n")
        assert out[0].startswith(b"* 1 FETCH (UID 1 FLAGS (\\Recent) ENVELOPE (")
        assert b'"hello 2"' in out[1] and out[-1] == b"b OK FETCH completed"
        out = await cl(b"c FETCH 2 BODY[]\r\n")
        joined = b"\r\n".join(out)
        assert b"body number 2\r\n" in joined and b"\\Seen" in joined
        size = int(re.search(rb"BODY\[\] \{(\d+)\}", joined).group(1))  # type: ignore[union-attr]
        assert size == len(MESSAGE % (2, 2, 2)) + (MESSAGE % (2, 2, 2)).count(b"\n")
        out = await cl(b"d STORE 3 +FLAGS (\\Flagged $Work)\r\n")
        assert out[0].startswith(b"* 3 FETCH (FLAGS (") and b"$Work" in out[0]
        assert await cl(b"e SEARCH FLAGGED\r\n") == [b"* SEARCH 3", b"e OK SEARCH completed"]
        assert (await cl(b'f SEARCH BODY "number 1"\r\n'))[0] == b"* SEARCH 1"
        assert (await cl(b"g UID SEARCH SEEN\r\n"))[0] == b"* SEARCH 2"
        out = await cl(b"h SEARCH RETURN (COUNT MIN) ALL\r\n")
        assert out[0] == b'* ESEARCH (TAG "h") MIN 1 COUNT 3'
        await cl(b"i ENABLE QRESYNC\r\n")
        out = await cl(b"j UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1)\r\n")
        assert all(b"MODSEQ (" in x for x in out[:-1])

    run(go())


def test_copy_move_expunge_append(maildir: Path) -> None:
    deliver(maildir, 3)

    async def go() -> None:
        cl = Client(maildir)
        await cl(b"a SELECT INBOX\r\n")
        out = await cl(b"b COPY 1:2 Archive\r\n")
        assert re.fullmatch(rb"b OK \[COPYUID \d+ 1:2 1:2\] COPY completed", out[-1]), out
        out = await cl(b"c UID MOVE 3 Trash\r\n")
        assert out[0].startswith(b"* OK [COPYUID ") and b"* 3 EXPUNGE" in out, out
        await cl(b"d STORE 1 +FLAGS.SILENT (\\Deleted)\r\n")
        out = await cl(b"e EXPUNGE\r\n")
        assert out == [b"* 1 EXPUNGE", b"e OK EXPUNGE completed"]
        out = await cl(b"f APPEND Drafts (\\Draft) {12}\r\nSubject: x\r\n\r\n")
        assert re.fullmatch(rb"f OK \[APPENDUID \d+ 1\] APPEND completed", out[-1]), out
        out = await cl(b"g STATUS Archive (MESSAGES UIDNEXT UNSEEN)\r\n")
        assert out[0] == b"* STATUS Archive (MESSAGES 2 UIDNEXT 3 UNSEEN 2)"
        out = await cl(b"h APPEND Nope {1}\r\nx\r\n")
        assert out[-1].startswith(b"h NO [TRYCREATE]"), out
        out = await cl(b'i LIST "" *\r\n')
        names = [x.rsplit(b" ", 1)[1] for x in out[:-1]]
        assert set(names) >= {b"INBOX", b"Sent", b"Drafts", b"Trash", b"Junk", b"Archive"}
        assert any(b"\\Sent" in x for x in out)
        out = await cl(b"j CREATE Work.Q1\r\n")
        assert out == [b"j OK CREATE completed"]
        out = await cl(b'k LIST "" Work%\r\n')
        assert out[0] == b'* LIST (\\Noselect \\HasChildren) "." Work', out
        out = await cl(b'l LIST (SPECIAL-USE) "" *\r\n')
        assert len(out) == 6, out
        out = await cl(b"m GETQUOTAROOT INBOX\r\n")
        assert out[-1] == b"m OK GETQUOTAROOT completed"
        out = await cl(b"n CLOSE\r\n")
        assert out == [b"n OK CLOSE completed"]

    run(go())


def test_changes_from_elsewhere(maildir: Path) -> None:
    deliver(maildir, 2)

    async def go() -> None:
        one, two = Client(maildir), Client(maildir)
        await one(b"a SELECT INBOX\r\n")
        await two(b"a SELECT INBOX\r\n")
        await one(b"b STORE 2 +FLAGS (\\Answered)\r\n")
        out = await two(b"c NOOP\r\n")
        assert out[0].startswith(b"* 2 FETCH (UID 2 FLAGS (\\Answered")
        assert out[-1] == b"c OK NOOP completed"
        await one(b"d STORE 1 +FLAGS (\\Deleted)\r\n")
        await one(b"e EXPUNGE\r\n")
        deliver(maildir, 0)
        (maildir / "new" / "1700000001.M9P1.mx,S=100").write_bytes(MESSAGE % (9, 9, 9))
        # A FETCH by number holds the expunge back; NOOP then tells it.
        # A FETCH by number holds the expunge back (numbers must not move under it) but
        # may tell of the new message; NOOP then tells the expunge.
        out = await two(b"f FETCH 1 (FLAGS)\r\n")
        assert b"EXPUNGE" not in b"".join(out) and b"* 3 EXISTS" in out, out
        out = await two(b"g NOOP\r\n")
        assert out == [b"* 1 EXPUNGE", b"g OK NOOP completed"], out

    run(go())


def test_uidvalidity_change_ends_the_session(maildir: Path) -> None:
    deliver(maildir, 2)

    async def go() -> None:
        cl = Client(maildir)
        await cl(b"a SELECT INBOX\r\n")
        # The UID state is lost (an operator restored an old copy, a disk error): the
        # next look rebuilds it with a new UIDVALIDITY, which voids the client's UIDs.
        (maildir / "qtoaster-uidlist").write_bytes(b"garbage\n")
        out = await cl(b"b NOOP\r\n")
        assert out[0] == b"* BYE Mailbox UIDVALIDITY changed", out

    run(go())
