"""The real IMAP clients people run (imapclients.py: mbsync, getmail6, curl, s-nail) against
a started qtoaster, as test_imap_clients_dovecot.py runs them against Dovecot.

One server per module (the tests reset alice's INBOX to sample 1..3 over IMAP). Its
certificate is replaced before the start by one for 127.0.0.1 (subjectAltName
DNS:localhost, IP:127.0.0.1 and DNS:127.0.0.1: isync matches the host only against DNS
names) that every client is told to trust (no verification is switched off). Plaintext
LOGIN stays refused (the default), so only STARTTLS and imaps are driven.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .dovecot_imap import make_cert
from .harness import Server as QtServer
from .harness import make_home
from .imapclients import (
    USER,
    ClientError,
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

pytestmark = pytest.mark.integration

PASSWORD = "secret"


def install_cert(home: Path, directory: Path) -> Path:
    """Replace the home's servercert.pem (key then certificate, as qtoaster keeps it) by a
    certificate for 127.0.0.1; returns the certificate alone for the clients to trust."""
    cert, key = make_cert(directory)
    target = home / "control" / "servercert.pem"
    target.write_bytes(key.read_bytes() + cert.read_bytes())  # keeps owner and mode
    key.unlink()
    cert.chmod(0o644)  # getmail runs as nobody and must read it
    return cert


@pytest.fixture(scope="module")
def qtoaster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[QtServer, Path]]:
    home = make_home(tmp_path_factory.mktemp("qt"))
    certdir = Path(tempfile.mkdtemp(prefix="qtoaster-cert-", dir="/var/tmp"))
    certdir.chmod(0o755)
    try:
        cafile = install_cert(home, certdir)
        srv = QtServer(home, "--imap", "127.0.0.1:0", "--imaps", "127.0.0.1:0", workers=1)
        try:
            yield srv, cafile
        finally:
            srv.stop()
    finally:
        shutil.rmtree(certdir, ignore_errors=True)


@pytest.fixture
def imap_server(qtoaster: tuple[QtServer, Path]) -> Server:
    """Alice's INBOX holding exactly sample 1..3 (fresh each test: expunged and appended)."""
    srv, cafile = qtoaster
    server = Server("127.0.0.1", srv.ports["imap"], srv.ports["imaps"], USER, PASSWORD, cafile)
    reset_inbox(server)
    return server


@pytest.mark.parametrize("tls", ["starttls", "imaps"])
def test_imaplib_sees_the_appended_messages(imap_server: Server, tls: str) -> None:
    imaplib_connect(imap_server, tls).logout()
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
    assert len(by_id) == len(state) == 4  # nothing pushed twice
    assert by_id["<sample2@example.test>"] == {"\\Flagged"}
    assert by_id["<sample4@example.test>"] == set()  # pushed with APPEND
    assert by_id["<sample1@example.test>"] == set()
    assert by_id["<sample3@example.test>"] == set()


@needs("getmail")
def test_getmail_fetches_every_message_over_imaps(imap_server: Server, tmp_path: Path) -> None:
    got = getmail_fetch(tmp_path / "getmail", imap_server, "imaps")
    assert [message_id(m) for m in got] == [f"<sample{n}@example.test>" for n in (1, 2, 3)]
    assert b"Body of sample 2." in got[1]
    assert len(imaplib_state(imap_server)) == 3  # read_all without delete keeps them


@needs("getmail")
def test_getmail_delete_expunges(imap_server: Server, tmp_path: Path) -> None:
    got = getmail_fetch(tmp_path / "getmail", imap_server, "imaps", delete=True)
    assert len(got) == 3
    assert imaplib_state(imap_server) == {}


@needs("curl")
@pytest.mark.parametrize("scheme", ["imaps", "starttls"])
def test_curl_lists_and_fetches(imap_server: Server, scheme: str) -> None:
    port = imap_server.imaps_port if scheme == "imaps" else imap_server.port
    base = f"{'imaps' if scheme == 'imaps' else 'imap'}://127.0.0.1:{port}"
    starttls = scheme == "starttls"
    listing = curl_imap(base + "/", imap_server, starttls=starttls)
    assert b"INBOX" in listing and b"Sent" in listing
    uid = min(imaplib_state(imap_server))
    body = curl_imap(f"{base}/INBOX;UID={uid}", imap_server, starttls=starttls)
    assert message_id(body) == "<sample1@example.test>"
    assert b"Body of sample 1." in body
    found = curl_imap(f"{base}/INBOX?SUBJECT%20%22sample%203%22", imap_server, starttls=starttls)
    assert found.split() == [b"*", b"SEARCH", b"3"]


@needs("curl")
def test_curl_plain_imap_without_starttls_cannot_log_in(imap_server: Server) -> None:
    """Without TLS the server advertises LOGINDISABLED: curl must not get in."""
    with pytest.raises(ClientError):
        curl_imap(f"imap://127.0.0.1:{imap_server.port}/", imap_server)


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
