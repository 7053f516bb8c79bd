"""BDAT (RFC 3030) in the client engine for a message received with BODY=BINARYMIME: golden
transcripts (test_smtp_client.py's format, fed in one chunk and byte by byte), the exact
bytes of a multi-MiB body in 1 MiB chunks, and the chunk framer against a one-shot
reference.  A hop without CHUNKING or BINARYMIME gets nothing: ``#5.6.3``."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.protocols.test_smtp_client import HELO, IP, Driver, feed, run

from qtoaster.protocols.smtp.bdatsend import BDAT_CHUNK, ChunkFramer, bdat_command
from qtoaster.protocols.smtp.client import ClientEngine, Transaction

__all__ = ["feed"]  # the fixture, imported for pytest

BODY = b"Subject: b\n\n.dot\n\x00\xff bin\n"  # 24 octets stored, 28 on the wire
BIN = (Transaction("a@me.example", ("b@x.example",), len(BODY), True, binarymime=True), BODY)
BIN2 = (
    Transaction("a@me.example", ("b@x.example", "c@x.example"), len(BODY), True, binarymime=True),
    BODY,
)
PLAIN = (Transaction("a@me.example", ("b@x.example",), 2, False), b"x\n")


def test_binarymime_by_bdat_in_chunks(feed: Callable[[bytes], Iterator[bytes]]) -> None:
    """LF becomes CRLF, a leading dot is not doubled, every octet else as is; each chunk
    waits for its 250 and the last one's reply is the message's."""
    script = r"""
        X: 0
        S: 220 mx.example ESMTP
        C: EHLO me.example
        S: 250-mx.example
        S: 250-SIZE 100000
        S: 250-CHUNKING
        S: 250 BINARYMIME
        E: Ready
        C: MAIL FROM:<a@me.example> SIZE=24 BODY=BINARYMIME
        S: 250 ok
        C: RCPT TO:<b@x.example>
        S: 250 ok
        E: SendChunk
        C~ BDAT 16\r\nSubject: b\r\n\r\n.d
        S: 250 2.0.0 16 octets received
        E: SendChunk
        C~ BDAT 12 LAST\r\not\r\n\x00\xff bin\r\n
        S: 250 2.0.0 ok queued
        E: Done K r
    """
    driver = run(script, [BIN], feed)
    (result,) = driver.results
    assert result.text == f"{IP} accepted message.\nRemote host said: 250 2.0.0 ok queued\n"


def test_pipelined_envelope_then_one_last_chunk(feed: Callable[[bytes], Iterator[bytes]]) -> None:
    """PIPELINING groups MAIL and the RCPTs (RFC 2920); the body waits for their replies."""
    script = r"""
        X: 0
        S: 220 mx.example ESMTP
        C: EHLO me.example
        S: 250-mx.example
        S: 250-PIPELINING
        S: 250-BINARYMIME
        S: 250 CHUNKING
        E: Ready
        C: MAIL FROM:<a@me.example> BODY=BINARYMIME
        C: RCPT TO:<b@x.example>
        C: RCPT TO:<c@x.example>
        S: 250 ok
        S: 550 no such user
        S: 250 ok
        E: SendChunk
        C~ BDAT 28 LAST\r\nSubject: b\r\n\r\n.dot\r\n\x00\xff bin\r\n
        S: 250 ok queued
        E: Done K hr
    """
    driver = run(script, [BIN2], feed, bdat_size=64)
    assert driver.results[0].recipients[0].text.endswith("550 no such user\n")


def test_refused_chunk_ends_the_body_and_rset_follows(
    feed: Callable[[bytes], Iterator[bytes]],
) -> None:
    """RFC 3030 2: after a 4xx/5xx to a BDAT no more chunks; the next transaction RSETs."""
    script = r"""
        X: 0
        S: 220 mx.example ESMTP
        C: EHLO me.example
        S: 250-mx.example
        S: 250-CHUNKING
        S: 250 BINARYMIME
        E: Ready
        C: MAIL FROM:<a@me.example> BODY=BINARYMIME
        S: 250 ok
        C: RCPT TO:<b@x.example>
        S: 250 ok
        E: SendChunk
        C~ BDAT 16\r\nSubject: b\r\n\r\n.d
        S: 552 5.3.4 too much
        E: Done D r
        X: 1
        C: RSET
        S: 250 flushed
        C: MAIL FROM:<a@me.example>
        S: 250 ok
        C: RCPT TO:<b@x.example>
        S: 250 ok
        C: DATA
        S: 354 go
        E: SendBody
        C: x
        C: .
        S: 250 ok
        E: Done K r
    """
    driver = run(script, [BIN, PLAIN], feed)
    assert driver.results[0].text == (
        f"{IP} failed on BDAT command.\nRemote host said: 552 5.3.4 too much\n"
    )


def test_all_recipients_refused_sends_no_chunk(feed: Callable[[bytes], Iterator[bytes]]) -> None:
    script = """
        X: 0
        S: 220 mx.example ESMTP
        C: EHLO me.example
        S: 250-mx.example
        S: 250-CHUNKING
        S: 250 BINARYMIME
        E: Ready
        C: MAIL FROM:<a@me.example> BODY=BINARYMIME
        S: 250 ok
        C: RCPT TO:<b@x.example>
        S: 550 no
        E: Done D h
    """
    run(script, [BIN], feed)


@pytest.mark.parametrize("offer", ["CHUNKING", "BINARYMIME", "8BITMIME"])
def test_hop_without_chunking_and_binarymime_gets_nothing(
    feed: Callable[[bytes], Iterator[bytes]], offer: str
) -> None:
    """RFC 3030 3: no MAIL at all; the permanent failure says why (#5.6.3)."""
    script = f"""
        X: 0
        S: 220 mx.example ESMTP
        C: EHLO me.example
        S: 250-mx.example
        S: 250 {offer}
        E: Ready
        E: Done D r
        Q:
        C: QUIT
        S: 221 bye
        E: Closed
    """
    driver = run(script, [BIN], feed)
    assert driver.results[0].text == (
        f"{IP} does not support BINARYMIME and CHUNKING, and the message was sent"
        " with BODY=BINARYMIME: no next hop takes it. (#5.6.3)"
    )


def test_multi_mib_body_in_1_mib_chunks() -> None:
    """A 3.4 MiB body: three chunks of exactly 1 MiB (BDAT_CHUNK), then the rest with LAST."""
    line = b"0123456789" * 7 + b"\n"  # 71 octets stored, 72 on the wire
    body = b".first line\n" + line * 50_000 + b"\x00last\n"
    tx = Transaction("a@me.example", ("b@x.example",), len(body), True, binarymime=True)
    engine = ClientEngine(peer=IP, helo=HELO)
    driver = Driver(engine, [(tx, body)], bdat_size=BDAT_CHUNK)
    driver.act("X:", "0")
    for reply in (b"220 mx\r\n", b"250-mx\r\n250-CHUNKING\r\n250 BINARYMIME\r\n", b"250 ok\r\n"):
        driver.handle(engine.receive(reply))
    assert bytes(driver.out).endswith(b"BODY=BINARYMIME\r\nRCPT TO:<b@x.example>\r\n")
    driver.out.clear()  # now the body
    driver.handle(engine.receive(b"250 ok\r\n"))
    for _ in range(3):
        assert driver.seen[-1] == "SendChunk"
        driver.handle(engine.receive(b"250 2.0.0 chunk ok\r\n"))
    driver.handle(engine.receive(b"250 2.0.0 queued\r\n"))
    assert driver.seen[-2:] == ["SendChunk", "Done K r"]
    wire = b".first line\r\n" + (b"0123456789" * 7 + b"\r\n") * 50_000 + b"\x00last\r\n"
    size = 1 << 20
    expected = b""
    for start in range(0, 3 * size, size):
        expected += b"BDAT 1048576\r\n" + wire[start : start + size]
    expected += b"BDAT %d LAST\r\n" % (len(wire) - 3 * size) + wire[3 * size :]
    assert len(wire) > 3 * size
    assert bytes(driver.out) == expected


@given(
    st.binary(max_size=300),
    st.lists(st.integers(min_value=0, max_value=300), max_size=6),
    st.integers(min_value=1, max_value=40),
)
def test_framer_any_split_gives_the_reference_chunks(
    body: bytes, cuts: list[int], size: int
) -> None:
    framer = ChunkFramer(size)
    points = sorted({0, len(body), *(c for c in cuts if c <= len(body))})
    out: list[bytes] = []
    for a, b in itertools.pairwise(points):
        out += framer.feed(body[a:b])
    out.append(framer.finish())
    wire = body.replace(b"\n", b"\r\n")
    reference = [wire[i : i + size] for i in range(0, len(wire), size)] or [b""]
    assert out == reference


def test_bdat_command_and_empty_body() -> None:
    assert bdat_command(0, True) == b"BDAT 0 LAST\r\n"
    assert bdat_command(5, False) == b"BDAT 5\r\n"
    assert ChunkFramer(4).finish() == b""
    with pytest.raises(ValueError):
        ChunkFramer(0)
