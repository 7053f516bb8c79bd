"""kill -9 of the whole server during IMAP writes, then a restart on the same home: every
APPEND answered OK is there exactly once with the UID its APPENDUID gave, no UID is shared
or given again to another message, the messages IMAP counts are the files in cur/ + new/,
and a fresh SELECT works.

Two runs, each on its own home: APPENDs in a loop (killed after ~50 answered OK of at most
200), and an EXPUNGE of many messages (killed as soon as the first file is gone). Loops are
bounded in count and time; every wait polls with a deadline.
"""

from __future__ import annotations

import imaplib
import os
import pwd
import re
import ssl
import threading
from pathlib import Path

import pytest

from .harness import Server, make_home, wait_until
from .imapclients import message_id

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # ~10 s each, more under load

APPENDS, KILL_AFTER = 200, 50
EXPUNGED = 1500  # messages in the mailbox when the EXPUNGE starts
ARGS = ("--imap", "127.0.0.1:0")


def start(home: Path) -> Server:
    return Server(home, *ARGS, workers=1)


def login(server: Server) -> imaplib.IMAP4:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    client = imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=30)
    client.starttls(ssl_context=context)
    client.login("alice@example.test", "secret")
    return client


def inbox(home: Path) -> Path:
    return home / "domains" / "example.test" / "alice" / "Maildir"


def files(home: Path) -> list[Path]:
    return [p for sub in ("cur", "new") for p in (inbox(home) / sub).iterdir() if p.name[:1] != "."]


def uid_map(client: imaplib.IMAP4) -> list[tuple[int, str]]:
    """(UID, Message-ID) of every message of the selected mailbox, in sequence order."""
    typ, data = client.uid("FETCH", "1:*", "(UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
    assert typ == "OK", data
    found = []
    for item in data:
        if isinstance(item, tuple):
            uid = re.search(rb"UID (\d+)", item[0])
            assert uid is not None, item
            found.append((int(uid[1]), message_id(item[1])))
    return found


def message(n: int) -> bytes:
    return (
        f"From: c@example.test\r\nMessage-ID: <crash{n}@example.test>\r\n\r\nbody {n}\r\n".encode()
    )


class Appender(threading.Thread):
    """APPENDs message 0..APPENDS-1 on one connection until it fails (the kill); keeps the
    APPENDUID of each one answered OK."""

    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True)
        self.client = login(server)
        self.answered: dict[str, int] = {}  # Message-ID -> UID
        self.lock = threading.Lock()

    def run(self) -> None:
        try:
            for n in range(APPENDS):
                typ, data = self.client.append("INBOX", None, None, message(n))
                if typ != "OK":
                    return
                found = re.search(rb"APPENDUID \d+ (\d+)", data[0])
                assert found is not None, data
                with self.lock:
                    self.answered[f"<crash{n}@example.test>"] = int(found[1])
        except (OSError, imaplib.IMAP4.error, EOFError):
            return  # the server is gone

    def count(self) -> int:
        with self.lock:
            return len(self.answered)


def check_after_restart(
    home: Path, before: dict[str, int], highest: int
) -> tuple[Server, list[tuple[int, str]]]:
    """Restart and check the invariants against ``before`` (Message-ID -> UID as a client
    was told before the kill) and ``highest`` (the highest UID any client was told)."""
    srv = start(home)
    client = login(srv)
    typ, data = client.select("INBOX")
    assert typ == "OK", data
    now = uid_map(client)
    uids = [uid for uid, _ in now]
    ids = [mid for _, mid in now]
    assert len(set(uids)) == len(uids), "a UID is shared"
    assert len(set(ids)) == len(ids), "a message is there twice"
    assert len(now) == int(data[0]) == len(files(home))
    by_id = dict((mid, uid) for uid, mid in now)
    for mid, uid in before.items():
        if mid in by_id:  # a client's UID still means the same message
            assert by_id[mid] == uid, (mid, uid, by_id[mid])
    told = set(before.values())
    for uid, mid in now:  # a UID never told before is above every UID told
        assert uid in told or uid > highest, (uid, mid, highest)
    client.logout()
    return srv, now


def test_kill9_during_appends(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    srv = start(home)
    try:
        appender = Appender(srv)
        appender.start()
        wait_until(lambda: appender.count() >= KILL_AFTER or not appender.is_alive(), 60, "OKs")
        srv.kill9()
        appender.join(30)
        assert not appender.is_alive()
        answered = dict(appender.answered)
        assert len(answered) >= KILL_AFTER
        assert len(answered) < APPENDS, "the kill came after the last APPEND"
        srv, now = check_after_restart(home, answered, max(answered.values()))
        present = {mid for _, mid in now}
        assert set(answered) <= present, set(answered) - present  # nothing OK'd is lost
        assert len(present) <= len(answered) + 1  # at most the one in flight besides
        client = login(srv)  # the UIDs go on above every UID given before
        typ, data = client.append("INBOX", None, None, message(APPENDS))
        found = re.search(rb"APPENDUID \d+ (\d+)", data[0])
        assert typ == "OK" and found is not None, data
        assert int(found[1]) > max(uid for uid, _ in now)
        assert int(found[1]) > max(answered.values())
        client.logout()
    finally:
        srv.stop()


def fill(home: Path, count: int) -> None:
    """``count`` messages straight into new/, as delivery leaves them (owned by vmail)."""
    new = inbox(home) / "new"
    owner = pwd.getpwnam("qtoaster-vmail") if os.geteuid() == 0 else None
    for n in range(count):
        path = new / f"{1700000000 + n}.M{n}P1.crash.test"
        path.write_bytes(message(n).replace(b"\r\n", b"\n"))
        if owner is not None:
            os.chown(path, owner.pw_uid, owner.pw_gid)
            path.chmod(0o600)


def test_kill9_during_expunge(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    fill(home, EXPUNGED)
    srv = start(home)
    try:
        client = login(srv)
        typ, data = client.select("INBOX")
        assert typ == "OK" and int(data[0]) == EXPUNGED, data
        before = {mid: uid for uid, mid in uid_map(client)}
        assert len(before) == EXPUNGED
        assert client.store("1:*", "+FLAGS.SILENT", "(\\Deleted)")[0] == "OK"
        # EXPUNGE without waiting for its answer; kill once the first file is gone.
        client.send(client._new_tag() + b" EXPUNGE\r\n")  # type: ignore[attr-defined]
        wait_until(lambda: len(files(home)) < EXPUNGED, 30, "the expunge to start")
        srv.kill9()
        left_at_kill = len(files(home))
        srv, now = check_after_restart(home, before, max(before.values()))
        assert len(now) <= left_at_kill
        client = login(srv)
        typ, data = client.select("INBOX")
        assert typ == "OK", data
        typ, data = client.search(None, "NOT", "DELETED")
        assert data == [b""], "a message lost its \\Deleted flag"
        client.expunge()  # the rest goes now
        assert client.select("INBOX")[1] == [b"0"]
        assert files(home) == []
        client.logout()
    finally:
        srv.stop()
