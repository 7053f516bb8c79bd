"""A BODY=BINARYMIME message relayed by a real ``qtoaster run`` (RFC 3030): received by BDAT
from a raw client, sent by BDAT in 1 MiB chunks to a recording peer that offers CHUNKING and
BINARYMIME (it gets exactly the message's octets), and bounced with ``#5.6.3`` for a
recipient whose next hop lacks BINARYMIME (that hop never sees a MAIL)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from tests.smtppeer import PeerBehaviour, SmtpPeer

from .harness import Server, make_home, qt, wait_for_mail, wait_until
from .test_smtp_bdat import read_replies

pytestmark = pytest.mark.integration

BINARY = PeerBehaviour(extensions=("PIPELINING", "8BITMIME", "CHUNKING", "BINARYMIME"))


def message() -> bytes:
    """About 1.6 MB: two BDAT chunks on the way out; a leading dot, NUL and 8-bit octets."""
    lines = [b"Subject: bdat relay", b"", b".a dot that BDAT never stuffs", b"\x00\xff\x80 bin"]
    lines += [b"%06d " % i + bytes(range(32, 127)) for i in range(16_000)]
    return b"\r\n".join(lines) + b"\r\n"


def test_binarymime_relayed_by_bdat_or_bounced(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    binary = SmtpPeer("127.0.0.1", behaviour=BINARY).start()
    plain = SmtpPeer("127.0.0.1").start()  # PIPELINING, SIZE, 8BITMIME: no CHUNKING
    (home / "control" / "smtproutes").write_text(
        f"bin.test:127.0.0.1:{binary.port}\nplain.test:127.0.0.1:{plain.port}\n"
    )
    server = Server(home)
    data = message()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            f = sock.makefile("rb")
            sock.sendall(
                b"EHLO c.test\r\nMAIL FROM:<alice@example.test> BODY=BINARYMIME\r\n"
                b"RCPT TO:<x@bin.test>\r\nRCPT TO:<y@plain.test>\r\n"
                b"BDAT %d LAST\r\n%s" % (len(data), data)
            )
            replies = read_replies(f, 6)
            assert [r[:3] for r in replies] == [b"220", b"250", b"250", b"250", b"250", b"250"]
            sock.sendall(b"QUIT\r\n")
        (got,) = binary.wait_for(1, 60)
        assert got.bdat and got.recipients == ("x@bin.test",)
        assert got.data.endswith(data)
        head = got.data[: len(got.data) - len(data)]
        assert head.startswith(b"Received: ") and head.endswith(b"\r\n")
        mail = [line for line in binary.transcript if line.startswith("MAIL")]
        assert mail == ["MAIL FROM:<alice@example.test> BODY=BINARYMIME"]
        bdat = [line for line in binary.transcript if line.startswith("BDAT")]
        assert bdat == ["BDAT 1048576", f"BDAT {len(got.data) - (1 << 20)} LAST"]
        bounce = wait_for_mail(home, "alice", b"y@plain.test")
        assert b"does not support BINARYMIME and CHUNKING" in bounce and b"(#5.6.3)" in bounce
        assert not any(line.startswith("MAIL") for line in plain.transcript)
        assert plain.messages == []
        wait_until(lambda: b"messages in queue: 0\n" in qt(home, "queue", "stat").stdout, 30)
    finally:
        server.stop()
        binary.stop()
        plain.stop()
