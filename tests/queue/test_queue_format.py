"""The message file format and qmail-queue's envelope grammar."""

from __future__ import annotations

import io

import pytest

from qtoaster.core.envelope import Envelope
from qtoaster.queue import exitcodes
from qtoaster.queue.format import (
    BadQueueFile,
    EnvelopeError,
    date822,
    encode_header,
    parse_envelope,
    read_header,
    received_line,
    scan_envelope,
)
from qtoaster.queue.origin import REQUIRETLS, origin_flags, trusted, with_flags


def test_round_trip() -> None:
    env = Envelope("alice@example.com", ("bob@example.net", "carol@example.org"))
    raw = encode_header(1_700_000_000.25, "smtp 127.0.0.1", env) + b"Subject: x\n\nbody\n"
    header = read_header(io.BytesIO(raw))
    assert header.birth == 1_700_000_000.25
    assert header.origin == "smtp 127.0.0.1"
    assert header.envelope == env
    assert raw[header.body_offset :] == b"Subject: x\n\nbody\n"


def test_exact_bytes_and_empty_sender() -> None:
    raw = encode_header(5.0, "inject uid 0", Envelope("", ()))
    assert raw == b"QTQ1 5.0 inject uid 0\nF\0\0"
    header = read_header(io.BytesIO(raw))
    assert header.envelope == Envelope("", ())
    assert header.body_offset == len(raw)


def test_origin_newline_is_sanitised() -> None:
    raw = encode_header(1.0, "a\nb", Envelope("s", ("r",)))
    assert read_header(io.BytesIO(raw)).origin == "a b"


def test_non_utf8_bytes_survive() -> None:
    env = Envelope("\udcff@x", ("r\udce9@y",))
    assert read_header(io.BytesIO(encode_header(1.0, "", env))).envelope == env


def test_large_envelope_across_chunks() -> None:
    env = Envelope("s@x", tuple(f"user{i}@example.com" for i in range(20000)))
    raw = encode_header(1.0, "", env) + b"body"
    header = read_header(io.BytesIO(raw))
    assert header.envelope == env
    assert raw[header.body_offset :] == b"body"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"XXXX 1.0 o\nF\0\0",
        b"QTQ1 nan o\nF\0\0",
        b"QTQ1 x o\nF\0\0",
        b"QTQ1 1.0 o\nFs\0Tr\0",  # truncated envelope
        b"QTQ1 1.0 o\nFs\0Xr\0\0",
        b"QTQ1 1.0 o",
    ],
)
def test_bad_files(raw: bytes) -> None:
    with pytest.raises(BadQueueFile):
        read_header(io.BytesIO(raw))


def test_scan_envelope() -> None:
    assert scan_envelope(b"") is None
    assert scan_envelope(b"Fa@b\0Tc") is None
    assert scan_envelope(b"Fa@b\0Tc\0\0rest") == (Envelope("a@b", ("c",)), 9)
    assert parse_envelope(b"F\0\0") == Envelope("", ())


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"T\0\0", 91),
        (b"Fa\0Fb\0\0", 91),
        (b"Fa\0Tb\0", 91),  # incomplete
        (b"Fa\0Tb\0\0x", 91),  # trailing garbage
        (b"F" + b"a" * 1000 + b"\0\0", 11),
        (b"Fa\0T" + b"b" * 1000 + b"\0\0", 11),
        (b"Fa\0T" + b"b" * 1000, 11),  # too long even before its NUL arrives
    ],
)
def test_envelope_errors(raw: bytes, code: int) -> None:
    with pytest.raises(EnvelopeError) as info:
        parse_envelope(raw)
    assert info.value.code == code


def test_address_999_bytes_is_fine() -> None:
    assert parse_envelope(b"F" + b"a" * 999 + b"\0\0").sender == "a" * 999


def test_date822_and_received() -> None:
    assert date822(1_700_000_000) == "14 Nov 2023 22:13:20 -0000"
    assert date822(0) == "1 Jan 1970 00:00:00 -0000"
    assert received_line("by uid 1000", 42, 0) == (
        b"Received: (qmail 42 invoked by uid 1000); 1 Jan 1970 00:00:00 -0000\n"
    )


def test_exit_code_replies() -> None:
    assert exitcodes.reply_for(11).code == 554
    assert exitcodes.reply_for(11).text == "envelope address too long for qq (#5.1.3)"
    assert exitcodes.reply_for(53).render() == b"451 qq write error or disk full (#4.3.0)\r\n"
    assert exitcodes.text_for(64) == "Zqq trouble creating files in queue (#4.3.0)"
    assert exitcodes.text_for(91) == "Zqq internal bug (#4.3.0)"
    assert exitcodes.text_for(99) == "Zqq temporary problem (#4.3.0)"
    assert exitcodes.text_for(-9) == "Zqq crashed (#4.3.0)"
    assert exitcodes.is_permanent(31) and not exitcodes.is_permanent(71)


def test_origin_flags_compose() -> None:
    assert with_flags("smtp 192.0.2.1", ()) == "smtp 192.0.2.1"
    origin = with_flags("smtp 192.0.2.1", ("relay", REQUIRETLS))
    assert origin == "smtp 192.0.2.1 relay requiretls"
    assert origin_flags(origin) == {"relay", "requiretls"}
    assert origin_flags("smtp 192.0.2.1") == frozenset()
    assert origin_flags("bounce") == frozenset()
    assert origin_flags("local 1 requiretls") == frozenset()  # only smtpd's origins
    # The flags compose: a relaying session's REQUIRETLS message is still our users' mail.
    assert trusted(origin) and not trusted(with_flags("smtp 192.0.2.1", (REQUIRETLS,)))


def test_dsn_lines_round_trip_and_offset() -> None:
    """RFC 3461 parameters ride in ``+M``/``+R`` lines before the envelope."""
    from qtoaster.core.dsn import EnvelopeDsn, MailDsn, RcptDsn

    env = Envelope("a@example.com", ("b@example.net", "c@example.org"))
    dsn = EnvelopeDsn(
        MailDsn("HDRS", "id+2B1"),
        {1: RcptDsn(frozenset({"SUCCESS", "DELAY"}), "rfc822;c+40example.org")},
    )
    head = encode_header(1.5, "smtp 127.0.0.1", env, dsn)
    assert head.split(b"\n")[1:3] == [
        b"+M RET=HDRS ENVID=id+2B1",
        b"+R 1 NOTIFY=SUCCESS,DELAY ORCPT=rfc822;c+40example.org",
    ]
    header = read_header(io.BytesIO(head + b"Subject: x\n\nbody\n"))
    assert header.envelope == env and header.dsn == dsn
    assert (head + b"Subject: x\n")[header.body_offset :] == b"Subject: x\n"


def test_file_without_dsn_lines_still_loads() -> None:
    """A message queued before DSN existed: the bytes an older version wrote, verbatim."""
    old = b"QTQ1 1700000000.25 smtp 127.0.0.1\nFa@b\x00Tc@d\x00\x00Subject: x\n\nbody\n"
    header = read_header(io.BytesIO(old))
    assert header.envelope == Envelope("a@b", ("c@d",))
    assert header.dsn.empty and header.dsn.rcpt(0).notify is None
    assert old[header.body_offset :] == b"Subject: x\n\nbody\n"
    # and one written today without parameters is byte for byte the old format
    assert (
        encode_header(1700000000.25, "smtp 127.0.0.1", header.envelope)
        == old[: -len(b"Subject: x\n\nbody\n")]
    )


@pytest.mark.parametrize(
    "line", [b"+M RET=ALL\n", b"+R x NOTIFY=NEVER\n", b"+Q\n", b"+R 0 NOTIFY=NEVER,DELAY\n"]
)
def test_bad_dsn_line_is_a_bad_queue_file(line: bytes) -> None:
    raw = b"QTQ1 1.0 smtp 127.0.0.1\n" + line + b"Fa@b\x00Tc@d\x00\x00x\n"
    with pytest.raises(BadQueueFile):
        read_header(io.BytesIO(raw))
