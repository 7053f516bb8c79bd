"""Regenerates tests/fixtures/imap/dovecot-maildir/ with Dovecot itself (run as root, with
dovecot-imapd installed): ``cd tests && python -m integration.make_imap_fixtures``.

A private Dovecot imap (dovecot_imap.py) gets 8 messages by APPEND (some with flags), then
over IMAP: keywords and flags set with STORE, messages 3 and 6 expunged (so the UIDs have
gaps), and its view read back (UID FETCH 1:* FLAGS + Message-ID, STATUS UIDVALIDITY
UIDNEXT). The Maildir is copied without Dovecot's binary index files (dovecot.index*,
dovecot.list.index*: caches Dovecot rebuilds; the migration reads dovecot-uidlist and
dovecot-keywords), and ``dovecot-maildir.json`` beside it records what Dovecot reported:
{"uidvalidity", "uidnext", "messages": {uid: {"flags": [...system flags...],
"keywords": [...], "message_id": ...}}}.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

from .dovecot_imap import DovecotImap
from .imapclients import Server, imaplib_append, imaplib_connect, imaplib_state

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "imap" / "dovecot-maildir"
USER, PASSWORD = "migrate@example.test", "pw"


def message(n: int) -> bytes:
    return (
        f"From: Sender {n} <sender{n}@example.test>\r\nTo: {USER}\r\n"
        f"Subject: fixture message {n}\r\nDate: Mon, 0{n % 9 + 1} Dec 2026 10:00:00 +0000\r\n"
        f"Message-ID: <fixture{n}@example.test>\r\n\r\nFixture body {n}.\r\n"
    ).encode()


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="qtoaster-fixture-", dir="/var/tmp"))
    dovecot = DovecotImap(workdir, {USER: PASSWORD})
    try:
        dovecot.configure()
        dovecot.start()
        server = Server("127.0.0.1", dovecot.port, dovecot.imaps_port, USER, PASSWORD, dovecot.cert)
        initial = {1: "", 2: "\\Seen", 3: "", 4: "\\Seen \\Answered", 5: "", 6: "\\Flagged"}
        for n in range(1, 9):
            imaplib_append(server, message(n), f"({initial[n]})" if initial.get(n) else "")
        client = imaplib_connect(server)
        client.select("INBOX")
        client.store("2", "+FLAGS", "($Forwarded Work)")
        client.store("5", "+FLAGS", "(\\Flagged \\Seen Personal)")
        client.store("7", "+FLAGS", "(\\Draft $Junk Work)")
        client.store("8", "+FLAGS", "(\\Seen)")
        client.store("3,6", "+FLAGS", "(\\Deleted)")
        client.expunge()
        _, status = client.status("INBOX", "(UIDVALIDITY UIDNEXT)")
        client.logout()
        text = status[0].decode() if isinstance(status[0], bytes) else ""
        uidvalidity = int(re.search(r"UIDVALIDITY (\d+)", text)[1])  # type: ignore[index]
        uidnext = int(re.search(r"UIDNEXT (\d+)", text)[1])  # type: ignore[index]
        state = imaplib_state(server)
        dovecot.stop()
        if FIXTURE.exists():
            shutil.rmtree(FIXTURE)
        shutil.copytree(
            dovecot.maildir(USER),
            FIXTURE,
            ignore=shutil.ignore_patterns("dovecot.index*", "dovecot.list.index*"),
        )
        for sub in ("new", "cur", "tmp"):
            (FIXTURE / sub).mkdir(exist_ok=True)
            if not any((FIXTURE / sub).iterdir()):  # git keeps no empty directory; Maildir
                (FIXTURE / sub / ".gitkeep").touch()  # readers skip dot files
        messages = {
            str(uid): {
                "flags": sorted(f for f in flags if f.startswith("\\")),
                "keywords": sorted(f for f in flags if not f.startswith("\\")),
                "message_id": mid,
            }
            for uid, (flags, mid) in sorted(state.items())
        }
        expected = {"uidvalidity": uidvalidity, "uidnext": uidnext, "messages": messages}
        (FIXTURE.parent / "dovecot-maildir.json").write_text(json.dumps(expected, indent=1) + "\n")
        print(json.dumps(expected, indent=1))
    finally:
        dovecot.remove()
    return 0


if __name__ == "__main__":
    sys.exit(main())
