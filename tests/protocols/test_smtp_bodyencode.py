"""BodyEncoder: qmail-remote's blast() (spec 17.3) for any split of the message."""

from __future__ import annotations

import pytest

from qtoaster.protocols.smtp.bodyencode import PARTIAL_LINE_TEXT, BodyEncoder, PartialLineError
from qtoaster.protocols.smtp.dataframe import DataFramer

SAMPLE = b".first\n\n..two\nmid.dot\n.\nbare\rcr\nwin\r\n.\r\nlast.\n"
WIRE = b"..first\r\n\r\n...two\r\nmid.dot\r\n..\r\nbare\rcr\r\nwin\r\r\n..\r\r\nlast.\r\n.\r\n"


def encode(*chunks: bytes) -> bytes:
    encoder = BodyEncoder()
    return b"".join(encoder.encode(c) for c in chunks) + encoder.finish()


def test_sample_in_one_chunk() -> None:
    assert encode(SAMPLE) == WIRE


@pytest.mark.parametrize("cut", range(len(SAMPLE) + 1))
def test_every_split_point(cut: int) -> None:
    assert encode(SAMPLE[:cut], SAMPLE[cut:]) == WIRE


def test_byte_by_byte_and_empty_chunks() -> None:
    chunks = [SAMPLE[i : i + 1] for i in range(len(SAMPLE))]
    assert encode(b"", *chunks, b"") == WIRE


def test_dots_at_line_starts_across_chunk_boundaries() -> None:
    assert encode(b"a\n", b".b\n", b".", b".\n") == b"a\r\n..b\r\n...\r\n.\r\n"


def test_cr_is_data_and_lf_becomes_crlf() -> None:
    # The queue stores LF line ends: a CR is a byte of the message, kept as is, so a stored
    # CR LF goes out as CR CR LF (qmail-remote) and qmail-smtpd stores CR LF again.
    assert encode(b"a\r\n") == b"a\r\r\n.\r\n"
    assert encode(b"a\rb\n") == b"a\rb\r\n.\r\n"


def test_empty_message_is_just_the_dot() -> None:
    assert encode() == b".\r\n"


@pytest.mark.parametrize("message", [b"no newline", b"a\nb", b".", b"a\n\r"])
def test_partial_final_line(message: bytes) -> None:
    encoder = BodyEncoder()
    encoder.encode(message)
    with pytest.raises(PartialLineError) as caught:
        encoder.finish()
    assert str(caught.value) == PARTIAL_LINE_TEXT
    assert PARTIAL_LINE_TEXT == "SMTP cannot transfer messages with partial final lines. (#5.6.2)"


def test_the_server_framer_gives_the_message_back() -> None:
    framed = DataFramer().feed(WIRE)
    assert framed.end == len(WIRE)
    assert framed.payload == SAMPLE
