"""BDAT (RFC 3030 CHUNKING) and BINARYMIME against a real ``qtoaster run``, from a raw
socket client: many chunk sizes pipelined with RSET/MAIL/RCPT, the smuggling variants
inside a chunk, databytes, and the Maildir file compared byte for byte."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import Server, maildir_files, qt, wait_for_mail, wait_until

pytestmark = pytest.mark.integration

CHUNK_SIZES = [1] * 40 + [7] * 40 + [1000] * 5 + [65536]


def chunks(message: bytes, sizes: list[int]) -> Iterator[bytes]:
    """``message`` cut at ``sizes`` in turn, the rest as one more chunk."""
    pos = 0
    for size in sizes:
        yield message[pos : pos + size]
        pos += size
    yield message[pos:]


def bdat_stream(message: bytes, sizes: list[int]) -> tuple[bytes, int]:
    """BDAT commands for ``message`` and ``BDAT 0 LAST``; how many chunk replies come."""
    parts = [b"BDAT %d\r\n%s" % (len(c), c) for c in chunks(message, sizes)]
    return b"".join(parts) + b"BDAT 0 LAST\r\n", len(parts) + 1


def read_replies(f: socket.SocketIO | object, count: int) -> list[bytes]:
    """``count`` replies (the last line of each)."""
    out = []
    while len(out) < count:
        line = f.readline()  # type: ignore[attr-defined]
        assert line, f"connection closed after {out!r}"
        if line[3:4] != b"-":
            out.append(line.rstrip(b"\r\n"))
    return out


def queue_form(message: bytes) -> bytes:
    """What the Maildir holds of a BDAT message: every line end as LF (docs/protocols.md)."""
    out = message.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return out if not out or out.endswith(b"\n") else out + b"\n"


def our_headers_then(data: bytes, message: bytes) -> None:
    """``data`` is the headers delivery and smtpd add, then exactly ``message``."""
    assert data.endswith(message)
    added = data[: len(data) - len(message)].decode()
    assert re.fullmatch(
        r"Return-Path: <[^\n]*>\nDelivered-To: [^\n]+\nReceived: from [^\n]+\n(  [^\n]+\n)*",
        added,
    ), added


def body(tag: bytes) -> bytes:
    lines = [
        b"Subject: " + tag,
        b"",
        b".a leading dot, not stuffed under BDAT",
        b".",
        "8-bit: Grüße ½ €".encode(),
    ]
    filler = [b"line %05d " % i + b"x" * (i % 90) for i in range(1500)]  # about 80 KB
    return b"\r\n".join(lines + filler) + b"\r\n"


def test_ehlo_offers_chunking_and_binarymime(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(b"EHLO c.test\r\n")
        lines = []
        while not lines or lines[-1][3:4] == b"-":
            lines.append(f.readline())
    names = {line[4:].strip() for line in lines}
    assert {b"CHUNKING", b"BINARYMIME"} <= names


def test_many_chunk_sizes_pipelined_land_byte_for_byte(server: Server) -> None:
    first, second = body(b"bdat sizes one"), b"Subject: bdat sizes two\r\n\r\nbare\nLF\rCR\r\n"
    stream1, replies1 = bdat_stream(first, CHUNK_SIZES)
    stream2, replies2 = bdat_stream(second, [3, 3])
    envelope = b"MAIL FROM:<s@remote.test>\r\nRCPT TO:<alice@example.test>\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(b"EHLO c.test\r\n")
        read_replies(f, 1)
        # RSET in the middle drops a started message; everything in one write.
        sock.sendall(
            envelope + b"BDAT 5\r\nlost!RSET\r\n" + envelope + stream1 + envelope + stream2
        )
        replies = read_replies(f, 2 + 2 + 2 + replies1 + 2 + replies2)
        sock.sendall(b"QUIT\r\n")
    assert replies[:4] == [b"250 2.0.0 ok"] * 2 + [b"250 2.0.0 5 octets received"] * 1 + [
        b"250 2.0.0 flushed"
    ]
    sizes = [len(c) for c in chunks(first, CHUNK_SIZES)]
    assert replies[6 : 6 + len(sizes)] == [b"250 2.0.0 %d octets received" % n for n in sizes]
    assert replies[5 + replies1].startswith(b"250 2.0.0 ok ")
    assert replies[-1].startswith(b"250 2.0.0 ok ")
    our_headers_then(wait_for_mail(server.home, "alice", b"bdat sizes one"), queue_form(first))
    data = wait_for_mail(server.home, "alice", b"bdat sizes two")
    our_headers_then(data, b"Subject: bdat sizes two\n\nbare\nLF\nCR\n")
    assert not any(b"lost!" in p.read_bytes() for p in maildir_files(server.home, "alice"))


def test_smuggling_variants_in_a_chunk_are_one_message(server: Server) -> None:
    before = len(maildir_files(server.home, "bob"))
    message = (
        b"Subject: bdat smuggle\r\n\r\none\n.\r\nMAIL FROM:<x@remote.test>\r\n"
        b"RCPT TO:<carol@example.test>\r\nDATA\r\ntwo\r.\r\nthree\r\n.\nfour\r\n.\r\nQUIT\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(
            b"EHLO c.test\r\nMAIL FROM:<s@remote.test>\r\nRCPT TO:<bob@example.test>\r\n"
            b"BDAT %d LAST\r\n%sNOOP\r\n" % (len(message), message)
        )
        replies = read_replies(f, 5)
    assert replies[3].startswith(b"250 2.0.0 ok ") and replies[4] == b"250 2.0.0 ok"
    data = wait_for_mail(server.home, "bob", b"bdat smuggle")
    our_headers_then(data, queue_form(message))
    wait_until(lambda: not qt(server.home, "queue", "list").stdout.strip(), what="empty queue")
    assert len(maildir_files(server.home, "bob")) == before + 1
    assert not any(b"bdat smuggle" in p.read_bytes() for p in maildir_files(server.home, "carol"))


def test_binarymime_needs_bdat(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(
            b"EHLO c.test\r\nMAIL FROM:<s@remote.test> BODY=BINARYMIME\r\n"
            b"RCPT TO:<carol@example.test>\r\nDATA\r\n"
            b"BDAT 30 LAST\r\nSubject: bdat binary\r\n\r\n\x00\x01\xfe\xff\r\n"
        )
        replies = read_replies(f, 5)
    assert replies[3] == b"503 5.5.1 BODY=BINARYMIME needs BDAT, not DATA (#5.5.1)"
    assert replies[4].startswith(b"250 2.0.0 ok ")
    data = wait_for_mail(server.home, "carol", b"bdat binary")
    assert data.endswith(b"Subject: bdat binary\n\n\x00\x01\xfe\xff\n")


def test_databytes_applies_to_bdat_and_the_stream_stays_in_step(home: Path) -> None:
    (home / "control" / "databytes").write_text("1000\n")
    srv = Server(home)
    try:
        big = b"Subject: bdat too big\r\n\r\n" + b"y" * 1200 + b"\r\n"
        stream, count = bdat_stream(big, [500, 500])
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
            f = sock.makefile("rb")
            f.readline()
            small = b"Subject: bdat small\r\n\r\nok\r\n"
            sock.sendall(
                b"EHLO c.test\r\nMAIL FROM:<s@remote.test>\r\nRCPT TO:<alice@example.test>\r\n"
                + stream
                + b"MAIL FROM:<s@remote.test>\r\nRCPT TO:<alice@example.test>\r\n"
                + b"BDAT %d LAST\r\n%s" % (len(small), small)
            )
            replies = read_replies(f, 3 + count + 3)
        assert replies[3 + count - 1] == (
            b"552 5.3.4 sorry, that message size exceeds my databytes limit (#5.3.4)"
        )
        assert replies[-1].startswith(b"250 2.0.0 ok ")
        wait_for_mail(home, "alice", b"bdat small")
        assert not any(b"too big" in p.read_bytes() for p in maildir_files(home, "alice"))
    finally:
        srv.stop()
