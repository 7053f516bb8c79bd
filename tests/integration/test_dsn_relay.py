"""DSN (RFC 3461) relayed onward, against a real ``qtoaster run`` and recording peers
(tests/smtppeer.py) that smtproutes puts behind two domains: ``dsn.test``'s peer offers
DSN, ``plain.test``'s does not.  The client is Python's smtplib (``mail_options``,
``rcpt_options``): swaks 20201014 has no option for ESMTP parameters (its ``--to`` splits
on commas and closes the address with ``>``, so not even one ``NOTIFY=SUCCESS`` can be
added to a RCPT), so swaks is not used here.

Also the delay warning end to end: ``[send] delay_warning = 1``, a peer that answers 451:
one ``Action: delayed`` notice reaches the sender's Maildir, and a restart sends no second.
"""

from __future__ import annotations

import re
import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.smtppeer import PeerBehaviour, SmtpPeer

from qtoaster.queue.store import QueueStore

from .harness import Server, maildir_files, make_home, wait_for_mail, wait_until

pytestmark = pytest.mark.integration

DSN_PEER = ("PIPELINING", "SIZE 10485760", "8BITMIME", "DSN")
REFUSED = "550 5.1.1 no such user here"


def _relaying_home(root: Path, *, bounce_format: str = "qsbmf", delay: str = "") -> Path:
    home = make_home(root)
    settings = home / "qtoaster.toml"
    text = settings.read_text().replace(
        'bounce_format = "qsbmf"', f'bounce_format = "{bounce_format}"'
    )
    if delay:
        text += f"\n[send]\ndelay_warning = {delay}\n"
    settings.write_text(text)
    (home / "tcp.smtp").write_text('127.0.0.1:allow,RELAYCLIENT=""\n:allow\n')
    return home


def _queue_empty(home: Path) -> bool:
    return QueueStore(home / "queue").ids() == []


def _lines(peer: SmtpPeer, address: str) -> list[str]:
    """The MAIL and RCPT lines of the transactions that named ``address`` (in order)."""
    out: list[str] = []
    mail = ""
    for line in peer.transcript:
        if line.upper().startswith("MAIL FROM:"):
            mail = line
        elif line.upper().startswith("RCPT TO:") and f"<{address}>" in line:
            out += [mail, line]
    return out


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, SmtpPeer, SmtpPeer]]:
    home = _relaying_home(tmp_path_factory.mktemp("dsnrelay"), bounce_format="dsn")
    refusing = {"gone@dsn.test": REFUSED, "gone@plain.test": REFUSED}
    with (
        SmtpPeer("127.0.0.1", behaviour=PeerBehaviour(extensions=DSN_PEER)) as dsn_peer,
        SmtpPeer("127.0.0.1", behaviour=PeerBehaviour(rcpt_replies=refusing)) as plain_peer,
    ):
        dsn_peer.behaviour.rcpt_replies = refusing
        (home / "control" / "smtproutes").write_text(
            f"dsn.test:127.0.0.1:{dsn_peer.port}\nplain.test:127.0.0.1:{plain_peer.port}\n"
        )
        server = Server(home)
        try:
            yield server, dsn_peer, plain_peer
        finally:
            server.stop()


def _send(server: Server, rcpt: str, subject: str, rcpt_options: list[str]) -> None:
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
        client.ehlo("client.test")
        refused = client.sendmail(
            "bob@example.test",
            [rcpt],
            f"Subject: {subject}\r\n\r\nhi\r\n".encode(),
            mail_options=["RET=HDRS", "ENVID=probe+2B1"],
            rcpt_options=rcpt_options,
        )
        assert refused == {}


def _for_bob(server: Server, needle: bytes) -> list[bytes]:
    files = maildir_files(server.home, "bob")
    return [d for d in (p.read_bytes() for p in files) if needle in d]


def test_a_dsn_peer_gets_the_request_and_we_send_no_notice(
    relay: tuple[Server, SmtpPeer, SmtpPeer],
) -> None:
    server, dsn_peer, _ = relay
    _send(server, "x@dsn.test", "dsn-hop-probe", ["NOTIFY=SUCCESS", "ORCPT=rfc822;x@y"])
    [got] = [m for m in dsn_peer.wait_for(1, 30) if b"dsn-hop-probe" in m.data]
    assert got.recipients == ("x@dsn.test",)
    mail, rcpt = _lines(dsn_peer, "x@dsn.test")
    assert re.fullmatch(r"MAIL FROM:<bob@example\.test> SIZE=\d+ RET=HDRS ENVID=probe\+2B1", mail)
    assert rcpt == "RCPT TO:<x@dsn.test> NOTIFY=SUCCESS ORCPT=rfc822;x@y"
    # The message is gone from the queue, so any notice of ours was queued before: none was.
    wait_until(lambda: _queue_empty(server.home), 30, "an empty queue")
    assert _for_bob(server, b"dsn-hop-probe") == []


def test_a_peer_without_dsn_gets_no_parameters_and_we_say_relayed(
    relay: tuple[Server, SmtpPeer, SmtpPeer],
) -> None:
    server, _, plain_peer = relay
    _send(server, "x@plain.test", "plain-hop-probe", ["NOTIFY=SUCCESS", "ORCPT=rfc822;x@y"])
    notice = wait_for_mail(server.home, "bob", b"Subject: plain-hop-probe", timeout=30)
    mail, rcpt = _lines(plain_peer, "x@plain.test")
    assert re.fullmatch(r"MAIL FROM:<bob@example\.test> SIZE=\d+", mail)
    assert rcpt == "RCPT TO:<x@plain.test>"
    assert b"Action: relayed" in notice
    assert b"Original-Recipient: rfc822; x@y" in notice
    assert b"Final-Recipient: rfc822; x@plain.test" in notice
    assert b"Original-Envelope-Id: probe+1" in notice


def test_notify_never_to_a_refusing_peer_gives_no_bounce(
    relay: tuple[Server, SmtpPeer, SmtpPeer],
) -> None:
    server, _, plain_peer = relay
    _send(server, "gone@plain.test", "never-probe", ["NOTIFY=NEVER"])
    wait_until(lambda: _lines(plain_peer, "gone@plain.test") != [], 30, "the RCPT at the peer")
    wait_until(lambda: _queue_empty(server.home), 30, "an empty queue")
    assert _for_bob(server, b"never-probe") == []


def test_the_default_notify_to_a_refusing_peer_bounces_with_original_recipient(
    relay: tuple[Server, SmtpPeer, SmtpPeer],
) -> None:
    server, dsn_peer, _ = relay
    _send(server, "gone@dsn.test", "failure-probe", ["ORCPT=rfc822;orig@y"])
    bounce = wait_for_mail(server.home, "bob", b"Subject: failure-probe", timeout=30)
    _, rcpt = _lines(dsn_peer, "gone@dsn.test")
    assert rcpt == "RCPT TO:<gone@dsn.test> ORCPT=rfc822;orig@y"
    assert b"Action: failed" in bounce
    assert b"Original-Recipient: rfc822; orig@y" in bounce
    assert b"Final-Recipient: rfc822; gone@dsn.test" in bounce
    assert b"no such user here" in bounce


def test_one_delay_warning_and_none_after_a_restart(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    home = _relaying_home(tmp_path_factory.mktemp("dsndelay"), delay="1")
    slow = PeerBehaviour(rcpt_replies={"slow@slow.test": "451 4.3.0 try again later"})
    with SmtpPeer("127.0.0.1", behaviour=slow) as peer:
        (home / "control" / "smtproutes").write_text(f"slow.test:127.0.0.1:{peer.port}\n")
        server = Server(home)
        try:
            _send(server, "slow@slow.test", "delay-probe", [])
            warning = wait_for_mail(home, "bob", b"Delayed Mail", timeout=30)
        finally:
            server.stop()
        tried = len(_lines(peer, "slow@slow.test"))
        logged = (home / "server.log").stat().st_size
        server = Server(home)
        try:  # a restart loads the message due at once: one more attempt, then its pass ends
            wait_until(lambda: len(_lines(peer, "slow@slow.test")) > tried, 30, "a retry")
            wait_until(lambda: b"result=deferral" in _log_since(home, logged), 30, "its result")
        finally:
            server.stop()  # lets the pass in flight finish
    assert b"Action: delayed" in warning and b"Subject: delay-probe" in warning
    assert b"Final-Recipient: rfc822; slow@slow.test" in warning
    warnings = [p for p in maildir_files(home, "bob") if b"Delayed Mail" in p.read_bytes()]
    assert len(warnings) == 1
    assert len(QueueStore(home / "queue").ids()) == 1  # the message itself, nothing more


def _log_since(home: Path, offset: int) -> bytes:
    return (home / "server.log").read_bytes()[offset:]
