"""Migration from Dovecot and Courier-IMAP: a Maildir copied as it is (tests/fixtures/imap/,
see its README) into a user's mailbox is served by qtoaster with the UIDVALIDITY, UIDs,
flags and keywords the old server gave (the fixture's JSON), so clients keep their caches.

One server per module: alice gets the Dovecot Maildir, bob the Courier one, copied before
the start and given to the mailbox owner (qtoaster-vmail, mode 0700/0600) as an operator
moving mail over would. Only IMAP (imaplib) is spoken to check them. The tests that only
read come first: the last one changes both mailboxes.
"""

from __future__ import annotations

import imaplib
import json
import os
import pwd
import re
import shutil
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .harness import Server, make_home
from .imapclients import message_id

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "imap"
OWNER = "qtoaster-vmail"


def maildir(home: Path, user: str) -> Path:
    return home / "domains" / "example.test" / user / "Maildir"


def install(fixture: str, target: Path) -> None:
    """Replace ``target`` by a copy of the fixture Maildir, owned as delivery leaves one."""
    shutil.rmtree(target)
    shutil.copytree(FIXTURES / fixture, target, ignore=shutil.ignore_patterns(".gitkeep"))
    if os.geteuid() != 0:
        return
    owner = pwd.getpwnam(OWNER)
    for path in [target, *target.rglob("*")]:
        os.lchown(path, owner.pw_uid, owner.pw_gid)
        path.chmod(0o700 if path.is_dir() else 0o600)


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = make_home(tmp_path_factory.mktemp("qt"))
    install("dovecot-maildir", maildir(home, "alice"))
    install("courier-maildir", maildir(home, "bob"))
    srv = Server(home, "--imap", "127.0.0.1:0", workers=1)
    yield srv
    srv.stop()


def expected(fixture: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{fixture}.json").read_text())
    return data


def login(server: Server, user: str) -> imaplib.IMAP4:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    client = imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=30)
    client.starttls(ssl_context=context)
    client.login(f"{user}@example.test", "secret")
    return client


def status(client: imaplib.IMAP4, items: str) -> dict[str, int]:
    typ, data = client.status("INBOX", f"({items})")
    assert typ == "OK", data
    text = data[0].decode() if isinstance(data[0], bytes) else ""
    return {k: int(v) for k, v in re.findall(r"([A-Z]+) (\d+)", text)}


def messages(client: imaplib.IMAP4) -> dict[str, dict[str, Any]]:
    """UID -> {"flags", "keywords", "message_id"} of INBOX, as the fixture's JSON has them
    (EXAMINE: the read leaves \\Seen and new/ alone)."""
    typ, data = client.select("INBOX", readonly=True)
    assert typ == "OK", data
    typ, data = client.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
    assert typ == "OK", data
    found: dict[str, dict[str, Any]] = {}
    for item in data:
        if not isinstance(item, tuple):
            continue
        head, body = item
        uid = re.search(rb"UID (\d+)", head)
        flags = re.search(rb"FLAGS \(([^)]*)\)", head)
        assert uid is not None and flags is not None, head  # imaplib keeps both before it
        names = set(flags[1].decode().split()) - {"\\Recent"}
        found[uid[1].decode()] = {
            "flags": sorted(f for f in names if f.startswith("\\")),
            "keywords": sorted(f for f in names if not f.startswith("\\")),
            "message_id": message_id(body),
        }
    return found


def test_dovecot_maildir_keeps_uids_flags_and_keywords(migrated: Server) -> None:
    want = expected("dovecot-maildir")
    client = login(migrated, "alice")
    try:
        got = status(client, "UIDVALIDITY UIDNEXT MESSAGES")
        assert got["UIDVALIDITY"] == want["uidvalidity"]
        assert got["UIDNEXT"] == want["uidnext"]
        assert got["MESSAGES"] == len(want["messages"])
        assert messages(client) == want["messages"]
    finally:
        client.logout()


def test_courier_maildir_keeps_uids_and_numbers_the_new_message(migrated: Server) -> None:
    want = expected("courier-maildir")
    client = login(migrated, "bob")
    try:
        got = status(client, "UIDVALIDITY UIDNEXT MESSAGES")
        assert got["UIDVALIDITY"] == want["uidvalidity"]
        assert got["MESSAGES"] == len(want["messages"]) + len(want["without_uid"])
        seen = messages(client)
        kept = {uid: m for uid, m in seen.items() if uid in want["messages"]}
        assert kept == want["messages"]
        (newcomer,) = [(int(uid), m) for uid, m in seen.items() if uid not in want["messages"]]
        (extra,) = want["without_uid"]
        assert newcomer[0] >= want["uidnext"], newcomer
        assert newcomer[1] == {k: extra[k] for k in ("flags", "keywords", "message_id")}
        assert got["UIDNEXT"] > newcomer[0]
    finally:
        client.logout()


@pytest.mark.parametrize(
    ("user", "fixture"), [("alice", "dovecot-maildir"), ("bob", "courier-maildir")]
)
def test_after_migration_new_uids_go_on_and_flags_change(
    migrated: Server, user: str, fixture: str
) -> None:
    """A read-write SELECT and an APPEND after the move: the old UIDs stay (a second login
    reads our own state now), an APPEND gets the next UID, a STORE of a keyword sticks."""
    want = expected(fixture)
    client = login(migrated, user)
    try:
        before = messages(client)
        uidnext = status(client, "UIDNEXT")["UIDNEXT"]
        message = f"From: x@example.test\r\nMessage-ID: <after-{user}@example.test>\r\n\r\nx\r\n"
        typ, data = client.append("INBOX", "(\\Seen Moved)", None, message.encode())
        assert typ == "OK", data
        appenduid = re.search(rb"APPENDUID (\d+) (\d+)", data[0])
        assert appenduid is not None, data
        assert int(appenduid[1]) == want["uidvalidity"]
        assert int(appenduid[2]) == uidnext
        typ, _ = client.select("INBOX")
        first = min(want["messages"], key=int)
        assert client.uid("STORE", first, "+FLAGS", "(Migrated)")[0] == "OK"
        after = messages(client)
        assert set(after) == set(before) | {str(uidnext)}
        assert after[str(uidnext)]["keywords"] == ["Moved"]
        assert "Migrated" in after[first]["keywords"]
        assert set(want["messages"][first]["keywords"]) <= set(after[first]["keywords"])
    finally:
        client.logout()
