"""The fake SMTP peer itself, driven by smtplib and by raw sockets (pipelining)."""

from __future__ import annotations

import asyncio
import smtplib
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from .smtppeer import PeerBehaviour, SmtpPeer
from .tls.pki import PrivateCA, client_context

MESSAGE = b"Subject: hi\r\n\r\n.leading dot\r\n..two dots\r\nend\r\n"


@pytest.fixture
def peer() -> Iterator[SmtpPeer]:
    with SmtpPeer("127.0.0.1") as peer:
        yield peer


def replies(sock: socket.socket, count: int) -> list[str]:
    """Read *count* complete (possibly multi-line) replies from *sock*."""
    buffer, done = b"", list[str]()
    while len(done) < count:
        while b"\n" not in buffer:
            chunk = sock.recv(65536)
            assert chunk, f"closed after {done}"
            buffer += chunk
        line, buffer = buffer.split(b"\n", 1)
        text = line.decode().rstrip("\r")
        if text[3:4] != "-":
            done.append(text)
    return done


def test_ephemeral_port_and_stop_with_a_session_open() -> None:
    peer = SmtpPeer("127.0.0.2").start()
    assert peer.port > 0
    with socket.create_connection(("127.0.0.2", peer.port), timeout=5) as sock:
        assert replies(sock, 1) == ["220 peer.test ESMTP"]
        peer.stop()
        assert sock.recv(1) == b""  # the peer hung up
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.2", peer.port), timeout=5).close()


def test_sendmail(peer: SmtpPeer) -> None:
    with smtplib.SMTP("127.0.0.1", peer.port, local_hostname="client.test", timeout=5) as smtp:
        assert smtp.sendmail("a@example.test", ["b@example.test", "c@example.test"], MESSAGE) == {}
        code, _ = smtp.ehlo("again.test")
        assert code == 250
        assert {"pipelining", "size", "8bitmime"} <= set(smtp.esmtp_features)
        assert "starttls" not in smtp.esmtp_features
        assert smtp.esmtp_features["size"] == "10485760"
    [message] = peer.wait_for(1, timeout=5)
    assert message.sender == "a@example.test"
    assert message.recipients == ("b@example.test", "c@example.test")
    assert message.data == b"Subject: hi\r\n\r\n.leading dot\r\n..two dots\r\nend\r\n"
    assert (message.tls, message.client_cert, message.helo) == (False, None, "client.test")
    assert peer.transcript[0] == "ehlo client.test"
    assert peer.transcript[1].startswith("mail FROM:<a@example.test>")
    assert peer.transcript[-1] == "QUIT"


def test_helo_noop_rset_and_unknown(peer: SmtpPeer) -> None:
    with smtplib.SMTP("127.0.0.1", peer.port, timeout=5) as smtp:
        assert smtp.helo("old.test")[0] == 250
        assert smtp.noop()[0] == 250
        assert smtp.mail("x@example.test")[0] == 250
        assert smtp.rset()[0] == 250
        assert smtp.rcpt("y@example.test")[0] == 503  # RSET forgot the sender
        assert smtp.docmd("VRFY", "y")[0] == 502
        smtp.sendmail("", ["y@example.test"], b"x\r\n")
    [message] = peer.wait_for(1, timeout=5)
    assert (message.sender, message.helo) == ("", "old.test")


def test_configured_replies(peer: SmtpPeer) -> None:
    peer.behaviour.rcpt_replies = {
        "bad@example.test": "550 5.1.1 no such user",
        "later@example.test": "451-first line\n451 second line",
    }
    with smtplib.SMTP("127.0.0.1", peer.port, timeout=5) as smtp:
        refused = smtp.sendmail(
            "a@example.test",
            ["bad@example.test", "later@example.test", "ok@example.test"],
            b"x\r\n",
        )
    assert refused == {
        "bad@example.test": (550, b"5.1.1 no such user"),
        "later@example.test": (451, b"first line\nsecond line"),
    }
    assert peer.wait_for(1, timeout=5)[0].recipients == ("ok@example.test",)


def test_refused_final_reply_records_nothing(peer: SmtpPeer) -> None:
    peer.behaviour.final_reply = "452 4.3.1 disk full"
    with smtplib.SMTP("127.0.0.1", peer.port, timeout=5) as smtp:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            smtp.sendmail("a@example.test", ["b@example.test"], b"x\r\n")
        assert refused.value.smtp_code == 452
        assert smtp.noop()[0] == 250  # the session goes on
    assert peer.messages == []


def test_refused_mail_and_data(peer: SmtpPeer) -> None:
    peer.behaviour.mail_reply = "451 try later"
    with (
        smtplib.SMTP("127.0.0.1", peer.port, timeout=5) as smtp,
        pytest.raises(smtplib.SMTPSenderRefused),
    ):
        smtp.sendmail("a@example.test", ["b@example.test"], b"x\r\n")
    peer.behaviour.mail_reply, peer.behaviour.data_reply = "250 ok", "554 no data today"
    with (
        smtplib.SMTP("127.0.0.1", peer.port, timeout=5) as smtp,
        pytest.raises(smtplib.SMTPDataError),
    ):
        smtp.sendmail("a@example.test", ["b@example.test"], b"x\r\n")
    assert peer.messages == []


def test_drop_mid_data() -> None:
    with (
        SmtpPeer("127.0.0.1", 0, PeerBehaviour(drop_mid_data=True)) as peer,
        smtplib.SMTP("127.0.0.1", peer.port, timeout=5) as smtp,
        pytest.raises(smtplib.SMTPServerDisconnected),
    ):
        smtp.sendmail("a@example.test", ["b@example.test"], b"x" * 100 + b"\r\n")
    assert peer.messages == []


@pytest.mark.parametrize("greeting", ["421 busy", "554 go away"])
def test_refusing_greetings(peer: SmtpPeer, greeting: str) -> None:
    peer.behaviour.greeting = greeting
    with pytest.raises(smtplib.SMTPConnectError):
        smtplib.SMTP("127.0.0.1", peer.port, timeout=5)


def test_554_greeting_serves_only_quit(peer: SmtpPeer) -> None:
    peer.behaviour.greeting = "554 go away"
    with socket.create_connection(("127.0.0.1", peer.port), timeout=5) as sock:
        assert replies(sock, 1) == ["554 go away"]
        sock.sendall(b"EHLO x\r\nQUIT\r\n")
        assert replies(sock, 2) == ["503 5.5.1 no service here", "221 peer.test bye"]
        assert sock.recv(1) == b""


def test_pipelined_commands_in_one_write(peer: SmtpPeer) -> None:
    peer.behaviour.rcpt_replies = {"no@example.test": "550 no"}
    with socket.create_connection(("127.0.0.1", peer.port), timeout=5) as sock:
        assert replies(sock, 1) == ["220 peer.test ESMTP"]
        sock.sendall(
            b"EHLO c.test\r\nMAIL FROM:<a@example.test> SIZE=3\r\nRCPT TO:<no@example.test>\r\n"
            b"RCPT TO:<b@example.test>\r\nDATA\r\n"
        )
        assert replies(sock, 5) == [
            "250 8BITMIME",
            "250 ok",
            "550 no",
            "250 ok",
            "354 go ahead",
        ]
        sock.sendall(b"hello\r\n.\r\nQUIT\r\n")
        assert replies(sock, 2) == ["250 ok queued", "221 peer.test bye"]
    [message] = peer.wait_for(1, timeout=5)
    assert (message.recipients, message.data) == (("b@example.test",), b"hello\r\n")


def test_data_without_recipients(peer: SmtpPeer) -> None:
    with socket.create_connection(("127.0.0.1", peer.port), timeout=5) as sock:
        sock.sendall(b"HELO c\r\nMAIL FROM:<>\r\nDATA\r\nQUIT\r\n")
        assert replies(sock, 5)[3:] == ["554 5.5.1 no valid recipients", "221 peer.test bye"]


@pytest.fixture(scope="module")
def ca() -> PrivateCA:
    return PrivateCA()


def tls_server(tmp_path: Path, ca: PrivateCA) -> ssl.SSLContext:
    _, pem = ca.issue("peer.test", dns=["peer.test"])
    (tmp_path / "peer.pem").write_bytes(pem)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "peer.pem")
    ctx.load_verify_locations(cadata=ca.cert_pem.decode())
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def test_starttls_with_client_certificate(peer: SmtpPeer, tmp_path: Path, ca: PrivateCA) -> None:
    peer.behaviour.tls = tls_server(tmp_path, ca)
    _, client_pem = ca.issue("relay.test")
    with smtplib.SMTP("127.0.0.1", peer.port, local_hostname="c.test", timeout=5) as smtp:
        smtp.ehlo()
        assert "starttls" in smtp.esmtp_features
        assert smtp.starttls(context=client_context(cert_pem=client_pem))[0] == 220
        smtp.ehlo()
        assert "starttls" not in smtp.esmtp_features
        assert smtp.docmd("STARTTLS")[0] == 502
        smtp.sendmail("a@example.test", ["b@example.test"], b"secret\r\n")
    [message] = peer.wait_for(1, timeout=5)
    assert message.tls and message.data == b"secret\r\n"
    assert message.client_cert is not None
    assert (("commonName", "relay.test"),) in message.client_cert["subject"]


def test_starttls_discards_injected_clear_text(
    peer: SmtpPeer, tmp_path: Path, ca: PrivateCA
) -> None:
    peer.behaviour.tls = tls_server(tmp_path, ca)
    with socket.create_connection(("127.0.0.1", peer.port), timeout=5) as raw:
        replies(raw, 1)
        raw.sendall(b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<evil@example.test>\r\n")
        assert replies(raw, 2)[1] == "220 ready to start TLS"
        with client_context().wrap_socket(raw, server_hostname="peer.test") as tls:
            tls.sendall(b"MAIL FROM:<a@example.test>\r\n")
            assert replies(tls, 1) == ["503 5.5.1 EHLO first"]  # TLS forgot the EHLO
    assert peer.injected == [b"MAIL FROM:<evil@example.test>\r\n"]


def test_wait_for_times_out(peer: SmtpPeer) -> None:
    with pytest.raises(TimeoutError, match="0 of 1 messages"):
        peer.wait_for(1, timeout=0.01)


async def test_async_client_and_wait(peer: SmtpPeer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", peer.port)
    writer.write(b"HELO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\nbody\r\n.\r\n")
    waiting = asyncio.ensure_future(peer.wait_for_async(1, timeout=5))
    [message] = await waiting
    assert message.data == b"body\r\n"
    writer.write(b"QUIT\r\n")
    assert (await reader.read()).endswith(b"250 ok queued\r\n221 peer.test bye\r\n")
    writer.close()


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        peer = SmtpPeer("::1").start()
    except OSError as exc:
        pytest.skip(f"no ::1 here: {exc}")
    try:
        with smtplib.SMTP("::1", peer.port, timeout=5) as smtp:
            assert smtp.noop()[0] == 250
    finally:
        peer.stop()


def test_bdat_when_chunking_is_offered() -> None:
    """RFC 3030: chunks are joined as octets (no dot or line handling); LAST ends the message
    with the final reply; a peer without CHUNKING answers 502 after reading the octets."""
    chunking = PeerBehaviour(extensions=("PIPELINING", "CHUNKING", "BINARYMIME"))
    with SmtpPeer("127.0.0.1", behaviour=chunking) as peer:
        with socket.create_connection(("127.0.0.1", peer.port), timeout=5) as sock:
            assert replies(sock, 1) == ["220 peer.test ESMTP"]
            sock.sendall(b"EHLO c.test\r\nMAIL FROM:<a@x.test> BODY=BINARYMIME\r\n")
            sock.sendall(b"RCPT TO:<b@y.test>\r\nBDAT 5\r\n.\r\n\x00\nBDAT 3 LAST\r\nz\r\n")
            got = replies(sock, 5)
            assert got[3:] == ["250 2.0.0 5 octets received", "250 ok queued"]
            sock.sendall(b"BDAT 2 LAST\r\nab")
            assert replies(sock, 1) == ["554 5.5.1 no valid recipients"]
            sock.sendall(b"QUIT\r\n")
            assert replies(sock, 1) == ["221 peer.test bye"]
        [message] = peer.wait_for(1, timeout=5)
        assert (message.data, message.bdat) == (b".\r\n\x00\nz\r\n", True)
        assert (message.sender, message.recipients) == ("a@x.test", ("b@y.test",))
    with (
        SmtpPeer("127.0.0.1") as plain,
        socket.create_connection(("127.0.0.1", plain.port), timeout=5) as sock,
    ):
        sock.sendall(b"EHLO c.test\r\nBDAT 6 LAST\r\nQUIT\r\nNOOP\r\n")
        assert replies(sock, 4)[2:] == ["502 5.5.2 unimplemented", "250 ok"]
