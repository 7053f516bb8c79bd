"""The real-client drivers (imapclients.py) checked against Dovecot's imap, so the same
tests can be pointed at qtoaster's imapd: each test takes an ``imap_server`` fixture
(a ``Server`` plus a way to reset the mailbox) and only speaks IMAP to it.

Skipped when Dovecot's imap is not installed (scripts/setup --test installs it) or a client
is missing, or when not run as root (Dovecot's private instance needs it).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .dovecot_imap import DovecotImap, available
from .imapclients import (
    USER,
    Server,
    curl_imap,
    getmail_fetch,
    imaplib_connect,
    imaplib_state,
    mbsync_sync,
    message_id,
    needs,
    reset_inbox,
    sample,
    snail_session,
)

pytestmark = pytest.mark.skipif(not available(), reason="dovecot-imapd not installed (or not root)")

PASSWORD = "secret-pw"


@pytest.fixture(scope="module")
def dovecot() -> Iterator[DovecotImap]:
    workdir = Path(tempfile.mkdtemp(prefix="qtoaster-dovecot-", dir="/var/tmp"))
    server = DovecotImap(workdir, {USER: PASSWORD})
    try:
        server.configure()
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def imap_server(dovecot: DovecotImap) -> Server:
    """Alice's INBOX holding exactly sample 1..3 (fresh each test: deleted and appended)."""
    server = Server("127.0.0.1", dovecot.port, dovecot.imaps_port, USER, PASSWORD, dovecot.cert)
    reset_inbox(server)
    return server


@pytest.mark.parametrize("tls", ["starttls", "imaps", "none"])
def test_imaplib_sees_the_appended_messages(imap_server: Server, tls: str) -> None:
    client = imaplib_connect(imap_server, tls)
    client.logout()
    state = imaplib_state(imap_server)
    assert [mid for _, mid in state.values()] == [f"<sample{n}@example.test>" for n in (1, 2, 3)]
    assert all(flags == set() for flags, _ in state.values())


@needs("mbsync")
@pytest.mark.parametrize("tls", ["starttls", "imaps"])
def test_mbsync_syncs_both_ways(imap_server: Server, tmp_path: Path, tls: str) -> None:
    result = mbsync_sync(
        tmp_path / "mbsync", imap_server, tls,
        flag_message_id="<sample2@example.test>", add_message=sample(4),
    )  # fmt: skip
    assert [m.message_id for m in result.pulled] == [f"<sample{n}@example.test>" for n in (1, 2, 3)]
    assert [m.message_id for m in result.pushed] == [
        f"<sample{n}@example.test>" for n in (1, 2, 3, 4)
    ]
    state = imaplib_state(imap_server)
    by_id = {mid: flags for flags, mid in state.values()}
    assert by_id["<sample2@example.test>"] == {"\\Flagged"}
    assert by_id["<sample4@example.test>"] == set()  # pushed with APPEND
    assert by_id["<sample1@example.test>"] == set()


@needs("getmail")
@pytest.mark.parametrize("tls", ["imaps", "none"])
def test_getmail_fetches_every_message(imap_server: Server, tmp_path: Path, tls: str) -> None:
    got = getmail_fetch(tmp_path / "getmail", imap_server, tls)
    assert [message_id(m) for m in got] == [f"<sample{n}@example.test>" for n in (1, 2, 3)]
    assert b"Body of sample 2." in got[1]
    # read_all without delete: the server still holds all three.
    assert len(imaplib_state(imap_server)) == 3


@needs("getmail")
def test_getmail_delete_expunges(imap_server: Server, tmp_path: Path) -> None:
    got = getmail_fetch(tmp_path / "getmail", imap_server, "imaps", delete=True)
    assert len(got) == 3
    assert imaplib_state(imap_server) == {}


@needs("curl")
@pytest.mark.parametrize("scheme", ["imap", "imaps", "starttls"])
def test_curl_lists_and_fetches(imap_server: Server, scheme: str) -> None:
    port = imap_server.imaps_port if scheme == "imaps" else imap_server.port
    base = f"{'imaps' if scheme == 'imaps' else 'imap'}://127.0.0.1:{port}"
    starttls = scheme == "starttls"
    listing = curl_imap(base + "/", imap_server, starttls=starttls)
    assert b"INBOX" in listing
    uid = min(imaplib_state(imap_server))
    body = curl_imap(f"{base}/INBOX;UID={uid}", imap_server, starttls=starttls)
    assert message_id(body) == "<sample1@example.test>"
    found = curl_imap(f"{base}/INBOX?SUBJECT%20%22sample%203%22", imap_server, starttls=starttls)
    assert found.strip().startswith(b"* SEARCH")
    assert len(found.split()) == 3  # "* SEARCH <seq>"


@needs("s-nail")
@pytest.mark.parametrize("tls", ["imaps", "starttls"])
def test_snail_lists_reads_and_deletes(imap_server: Server, tmp_path: Path, tls: str) -> None:
    out = snail_session(
        tmp_path / "snail", imap_server, ["headers", "print 2", "delete 3", "quit"], tls
    )
    assert "sample 1" in out and "sample 3" in out  # the header summary
    assert "Body of sample 2." in out
    state = imaplib_state(imap_server)
    assert sorted(mid for _, mid in state.values()) == [
        "<sample1@example.test>",
        "<sample2@example.test>",
    ]
    by_id = {mid: flags for flags, mid in state.values()}
    assert "\\Seen" in by_id["<sample2@example.test>"]  # s-nail read it


FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "imap"


def test_dovecot_fixture_is_what_dovecot_reports(dovecot: DovecotImap) -> None:
    """tests/fixtures/imap/dovecot-maildir (made by make_imap_fixtures.py, without Dovecot's
    index files) served by Dovecot again: the UIDs, flags and keywords of its JSON."""
    import json
    import shutil

    expected = json.loads((FIXTURES / "dovecot-maildir.json").read_text())
    user = "fixture@example.test"
    server = DovecotImap(dovecot.root.parent / (dovecot.root.name + "-fixture"), {user: "pw"})
    try:
        server.configure()
        shutil.rmtree(server.maildir(user))
        shutil.copytree(FIXTURES / "dovecot-maildir", server.maildir(user))
        server.fix_ownership()
        server.start()
        state = imaplib_state(
            Server("127.0.0.1", server.port, server.imaps_port, user, "pw", server.cert)
        )
    finally:
        server.remove()
    got = {
        str(uid): {
            "flags": sorted(f for f in flags if f.startswith("\\")),
            "keywords": sorted(f for f in flags if not f.startswith("\\")),
            "message_id": mid,
        }
        for uid, (flags, mid) in state.items()
    }
    assert got == expected["messages"]
