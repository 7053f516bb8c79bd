"""Mailbox names on the wire: modified UTF-7 for IMAP4rev1 clients, UTF-8 after ENABLE
UTF8=ACCEPT (RFC 6855) or IMAP4rev2; on disk always Dovecot's UTF-8 layout."""

from __future__ import annotations

import asyncio
from pathlib import Path

from qtoaster.maildir.create import make_maildir

from .test_mailsession import Client


def test_modified_utf7_and_utf8_names(tmp_path: Path) -> None:
    maildir = tmp_path / "Maildir"
    make_maildir(maildir)

    async def go() -> None:
        rev1 = Client(maildir)
        assert await rev1(b"a CREATE Entw&APw-rfe\r\n") == [b"a OK CREATE completed"]
        assert (maildir / ".Entwürfe" / "cur").is_dir()
        out = await rev1(b'b LIST "" Entw*\r\n')
        assert out[0] == b'* LIST (\\HasNoChildren) "." Entw&APw-rfe', out
        utf8 = Client(maildir)
        assert (await utf8(b"c ENABLE UTF8=ACCEPT\r\n"))[0] == b"* ENABLED UTF8=ACCEPT"
        out = await utf8(b'd LIST "" Entw*\r\n')
        assert out[0] == '* LIST (\\HasNoChildren) "." "Entwürfe"'.encode(), out
        out = await utf8('e SELECT "Entwürfe"\r\n'.encode())
        assert out[-1] == b"e OK [READ-WRITE] SELECT completed"
        # RFC 6855 4: a message with UTF-8 headers comes as APPEND's UTF8 (literal8).
        message = "Subject: Grüße\r\n\r\nHallo\r\n".encode()
        command = b'h APPEND "Entw\xc3\xbcrfe" UTF8 (~{%d+}\r\n' % len(message)
        out = await utf8(command + message + b")\r\n")
        assert out[-1].startswith(b"h OK [APPENDUID "), out
        out = await utf8(b"i FETCH 1 BODY.PEEK[HEADER.FIELDS (SUBJECT)]\r\n")
        assert "Subject: Grüße".encode() in b"\r\n".join(out), out
        # A name a Maildir++ folder cannot have is refused, not mangled.
        out = await rev1(b"f CREATE a..b\r\n")
        assert out[-1].startswith(b"f NO [CANNOT]"), out
        out = await rev1(b"g CREATE INBOX\r\n")
        assert out[-1].startswith(b"g NO [ALREADYEXISTS]"), out

    asyncio.run(go())
