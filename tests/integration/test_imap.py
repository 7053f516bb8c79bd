"""IMAP end to end: Python's imaplib (IMAP4rev1) against a started server, mail arriving
over SMTP, POP3 beside IMAP on one mailbox, IDLE seeing a delivery."""

from __future__ import annotations

import imaplib
import poplib
import re
import smtplib
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import Server, maildir_files, make_home, wait_until


def _context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    return ctx


@pytest.fixture
def imap(tmp_path: Path) -> Iterator[Server]:
    home = make_home(tmp_path)
    srv = Server(
        home, "--imap", "127.0.0.1:0", "--imaps", "127.0.0.1:0", "--pop3", "127.0.0.1:0", workers=1
    )
    yield srv
    srv.stop()


def stored(server: Server, user: str) -> int:
    """Messages in the user's INBOX, new/ and cur/ (a selected IMAP session moves them)."""
    new = maildir_files(server.home, user)
    inbox = server.home / "domains" / "example.test" / user / "Maildir"
    cur = inbox / "cur"
    return len(new) + (len(list(cur.iterdir())) if cur.is_dir() else 0)


def send(server: Server, to: str, count: int, subject: str = "m") -> None:
    """``count`` messages, each stored before the next is sent: local delivery runs in
    parallel, and the tests rely on UIDs (arrival order) following the subjects."""
    before = stored(server, to)
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
        for n in range(count):
            message = (
                f"From: Sender <sender@far.test>\r\nTo: {to}@example.test\r\n"
                f"Subject: {subject}{n}\r\nMessage-ID: <{subject}{n}@far.test>\r\n\r\n"
                f"body {n} of {subject}\r\n"
            ).encode()
            client.sendmail("sender@far.test", [f"{to}@example.test"], message)
            done = before + n + 1
            wait_until(lambda done=done: stored(server, to) == done, what="delivery")


def login(server: Server, user: str = "alice") -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=30)
    client.starttls(ssl_context=_context())
    client.login(f"{user}@example.test", "secret")
    return client


def test_folders_select_fetch_store_search_copy_move_expunge(imap: Server) -> None:
    send(imap, "alice", 3)
    client = login(imap)
    caps = client.capability()[1][0].split()
    # docs/imap.md's list: what the engine, the session and the mail handlers implement.
    for cap in (b"LITERAL+", b"IDLE", b"UIDPLUS", b"MOVE", b"CONDSTORE", b"QRESYNC", b"ESEARCH"):
        assert cap in caps, caps
    typ, listing = client.list()
    assert typ == "OK"
    text = b"\n".join(x for x in listing if isinstance(x, bytes)).decode()
    for name, use in (
        ("Sent", "\\Sent"),
        ("Drafts", "\\Drafts"),
        ("Trash", "\\Trash"),
        ("Junk", "\\Junk"),
        ("Archive", "\\Archive"),
    ):
        assert re.search(rf'\({".*"}{re.escape(use)}.*\) "\." {name}', text), text
    assert "INBOX" in text
    typ, data = client.select("INBOX")
    assert typ == "OK" and data == [b"3"], data
    typ, data = client.fetch("1:*", "(FLAGS ENVELOPE RFC822.SIZE)")
    assert typ == "OK"
    joined = b" ".join(d[0] if isinstance(d, tuple) else d for d in data)
    assert b'"m0"' in joined and b"ENVELOPE" in joined and b"<m2@far.test>" in joined
    typ, data = client.fetch("2", "(BODY.PEEK[])")
    body = data[0][1]
    assert b"Subject: m1\r\n" in body and body.endswith(b"body 1 of m\r\n")
    size = re.search(rb"RFC822.SIZE (\d+)", joined)
    assert size is not None
    typ, data = client.fetch("1", "(RFC822.SIZE BODY[])")
    assert int(re.search(rb"RFC822.SIZE (\d+)", data[0][0]).group(1)) == len(data[0][1])  # type: ignore[union-attr]
    typ, data = client.fetch("1", "(FLAGS)")
    assert b"\\Seen" in data[0]  # BODY[] without PEEK set \Seen
    assert client.store("3", "+FLAGS", "(\\Flagged $Important)")[0] == "OK"
    assert client.search(None, "FLAGGED") == ("OK", [b"3"]), client.fetch("1:*", "(UID FLAGS)")
    assert client.search(None, "KEYWORD", "$Important") == ("OK", [b"3"])
    assert client.search(None, "SUBJECT", "m1") == ("OK", [b"2"])
    assert client.search(None, "BODY", '"body 2"') == ("OK", [b"3"])
    typ, data = client.uid("SEARCH", None, "ALL")
    uids = data[0].split()
    assert len(uids) == 3
    typ, data = client.copy("1:2", "Archive")
    assert typ == "OK"
    typ, data = client.status("Archive", "(MESSAGES UIDNEXT UNSEEN)")
    assert b"MESSAGES 2" in data[0]
    typ, data = client.uid("MOVE", uids[2].decode(), "Trash")
    assert typ == "OK"
    typ, data = client.search(None, "ALL")
    assert data == [b"1 2"]
    client.store("1", "+FLAGS", "\\Deleted")
    typ, data = client.expunge()
    assert data[-1] == b"1"  # imaplib also keeps the EXPUNGE of the MOVE above
    typ, data = client.select("Trash")
    assert data == [b"1"]
    typ, data = client.fetch("1", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert b"Subject: m2" in data[0][1] and b"$Important" in data[0][0]
    client.logout()


def test_append_create_rename_delete_quota(imap: Server) -> None:
    client = login(imap)
    message = b"From: a@example.test\r\nSubject: draft\r\n\r\nhello\r\n"
    typ, data = client.append("Drafts", "(\\Draft \\Seen)", None, message)
    assert typ == "OK"
    assert re.search(rb"APPENDUID \d+ 1", data[0]), data
    assert client.create("Projects.Q1")[0] == "OK"
    assert client.rename("Projects.Q1", "Projects.Q2")[0] == "OK"
    typ, listing = client.list('""', "Projects*")
    text = b"\n".join(listing).decode()
    assert "Projects.Q2" in text and "Projects.Q1" not in text
    assert client.delete("Projects.Q2")[0] == "OK"
    typ, data = client.append("Nowhere", None, None, message)
    assert typ == "NO" and b"TRYCREATE" in data[0]
    typ, data = client.select("Drafts")
    assert data == [b"1"]
    typ, data = client.fetch("1", "(FLAGS BODY.PEEK[])")
    assert b"\\Draft" in data[0][0] and data[0][1] == message
    typ, data = client.getquotaroot("INBOX")
    assert typ == "OK"
    client.logout()


def test_idle_sees_a_delivery_over_smtp(imap: Server) -> None:
    client = login(imap)
    client.select("INBOX")
    tag = client._new_tag().decode()  # type: ignore[attr-defined]
    sock = client.socket()
    sock.sendall(f"{tag} IDLE\r\n".encode())
    f = sock.makefile("rb")
    assert f.readline().startswith(b"+ ")
    send(imap, "alice", 1)
    stored_at = time.monotonic()  # the message is in the Maildir
    sock.settimeout(10)
    line = f.readline()
    waited = time.monotonic() - stored_at
    assert line == b"* 1 EXISTS\r\n", line
    # Within a second (the broker's inotify watch wakes the session; the look every 30 s
    # is only the fallback for file systems without inotify).
    assert waited < 1.0, waited
    sock.sendall(b"DONE\r\n")
    while True:
        line = f.readline()
        if line.startswith(tag.encode()):
            assert b" OK " in line
            break


def test_pop3_delete_while_imap_selected(imap: Server) -> None:
    send(imap, "bob", 2)
    client = login(imap, "bob")
    client.select("INBOX")
    pop = poplib.POP3("127.0.0.1", imap.ports["pop3"], timeout=30)
    pop.stls(context=_context())
    pop.user("bob@example.test")
    pop.pass_("secret")
    pop.dele(1)
    pop.quit()
    typ, data = client.noop()
    assert typ == "OK"
    assert client.untagged_responses.get("EXPUNGE") == [b"1"], client.untagged_responses
    typ, data = client.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert b"Subject: m1" in data[0][1]
    # IMAP's expunge is seen by POP3 at the next login.
    client.store("1", "+FLAGS", "\\Deleted")
    client.expunge()
    pop = poplib.POP3("127.0.0.1", imap.ports["pop3"], timeout=30)
    pop.stls(context=_context())
    pop.user("bob@example.test")
    pop.pass_("secret")
    assert pop.stat()[0] == 0
    pop.quit()
    client.logout()


def test_two_sessions_see_each_others_changes(imap: Server) -> None:
    send(imap, "carol", 2)
    one, two = login(imap, "carol"), login(imap, "carol")
    one.select("INBOX")
    two.select("INBOX")
    one.store("2", "+FLAGS", "\\Answered")
    two.noop()
    fetched = two.untagged_responses.get("FETCH", [])
    assert any(b"\\Answered" in f for f in fetched if isinstance(f, bytes)), fetched
    one.store("1", "+FLAGS", "\\Deleted")
    one.expunge()
    two.noop()
    assert two.untagged_responses.get("EXPUNGE") == [b"1"]
    assert two.search(None, "ALL") == ("OK", [b"1"])
    one.logout()
    two.logout()


def test_imaps_and_login_refused_in_clear(imap: Server) -> None:
    with socket.create_connection(("127.0.0.1", imap.ports["imap"]), timeout=10) as sock:
        f = sock.makefile("rb")
        assert f.readline().startswith(b"* OK")
        sock.sendall(b"a LOGIN alice@example.test secret\r\n")
        assert f.readline().startswith(b"a NO [PRIVACYREQUIRED]")
    client = imaplib.IMAP4_SSL("127.0.0.1", imap.ports["imaps"], ssl_context=_context(), timeout=30)
    client.login("alice@example.test", "secret")
    assert client.select("INBOX")[0] == "OK"
    client.logout()
