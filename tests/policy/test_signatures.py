"""control/signatures (spec 11): loading, and golden messages through the scanner.

Every golden message is fed in one chunk, byte by byte and split at every position;
all must agree (the scanner is sans-IO and must not depend on chunking).
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest

from qtoaster.core.errors import ConfigError
from qtoaster.policy.signatures import (
    DEPTH_MAX,
    EXECUTABLE,
    LINE_MAX,
    Scanner,
    Signatures,
    disabled_by,
)

SEED = [
    b"TVqQAAMAA",
    b"TVpQAAIAA",
    b"TVpAALQAc",
    b"TVpyAXkAX",
    b"TVrmAU4AA",
    b"TVrhARwAk",
    b"TVoFAQUAA",
    b"TVoAAAQAA",
    b"TVoIARMAA",
    b"TVouARsAA",
    b"TVrQAT8AA",
]
PE = base64.encodebytes(b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" * 20)
TEXT = b"Hello,\nplease find the file attached.\n"


def scan(message: bytes, sigs: list[bytes] = SEED) -> bool:
    """The verdict, checked to be the same for every way of chunking *message*."""
    whole = Scanner(sigs)
    whole.feed(message)
    by_byte = Scanner(sigs)
    for index in range(len(message)):
        by_byte.feed(message[index : index + 1])
    assert by_byte.found == whole.found
    for split in range(len(message) + 1):
        two = Scanner(sigs)
        two.feed(message[:split])
        two.feed(message[split:])
        assert two.found == whole.found, split
    return whole.found


def multipart(boundary: bytes, *parts: bytes, quote: bool = True) -> bytes:
    value = b'"' + boundary + b'"' if quote else boundary
    out = b"Content-Type: multipart/mixed; boundary=" + value + b"\n\npreamble\n"
    for part in parts:
        out += b"--" + boundary + b"\n" + part
    return out + b"--" + boundary + b"--\nepilogue\n"


def attachment(body: bytes, kind: bytes = b"application/octet-stream") -> bytes:
    return b"Content-Type: " + kind + b"\nContent-Transfer-Encoding: base64\n\n" + body


TOP = b"From: a@example.com\nTo: b@example.com\nSubject: hi\nMIME-Version: 1.0\n"


def test_reply_text() -> None:
    assert EXECUTABLE.render() == b"552 we don't accept email with executable content (#5.3.4)\r\n"


def test_pe_attachment_in_multipart_hits() -> None:
    message = TOP + multipart(b"XyZ", b"Content-Type: text/plain\n\n" + TEXT, attachment(PE))
    assert PE.startswith(b"TVqQAAMAA")
    assert scan(message)
    scanner = Scanner(SEED)
    scanner.feed(message)
    assert scanner.matched == b"TVqQAAMAA"


def test_unquoted_boundary_and_nested_multipart_in_alternative() -> None:
    inner = multipart(b"inner", b"Content-Type: text/plain\n\n" + TEXT, attachment(PE))
    outer = TOP + multipart(
        b"outer",
        b"Content-Type: text/plain\n\nplain\n",
        inner,
        quote=False,
    ).replace(b"multipart/mixed", b"multipart/alternative", 1)
    assert scan(outer)


def test_attachment_after_a_closed_nested_multipart_hits() -> None:
    inner = multipart(b"in", b"Content-Type: text/plain\n\n" + TEXT)
    assert scan(TOP + multipart(b"out", inner, attachment(PE)))


def test_message_rfc822_attachment_containing_an_executable() -> None:
    enclosed = TOP + multipart(b"enc", attachment(PE))
    message = TOP + multipart(b"top", b"Content-Type: message/rfc822\n\n" + enclosed)
    assert scan(message)
    # quoted and upper-case type: still message/rfc822
    quoted = message.replace(b"message/rfc822", b'"MESSAGE/RFC822"')
    assert scan(quoted)


def test_signature_in_the_middle_of_a_body_does_not_hit() -> None:
    body = b"Content-Type: text/plain\n\nfirst line\n" + PE
    assert not scan(TOP + multipart(b"b", body))
    assert not scan(TOP + b"\nfirst line\n" + PE)


def test_first_body_line_of_a_plain_message_is_scanned() -> None:
    assert scan(TOP + b"\n" + PE)


def test_signature_as_long_as_the_line_does_not_hit() -> None:
    # the compared line carries its LF: "TVqQAAMA\n" is 9 bytes, as long as the signature
    assert not scan(TOP + b"\nTVqQAAMA\n", [b"TVqQAAMA\n"])
    assert not scan(TOP + b"\nTVqQAAMAA")  # no LF yet: no line at all
    assert scan(TOP + b"\nTVqQAAMAA\n")  # 10 bytes with its LF: strictly longer


def test_match_is_case_sensitive_and_literal() -> None:
    assert not scan(TOP + b"\ntvqqaamaa" + b"A" * 60 + b"\n")
    assert not scan(TOP + b"\nTVqQ.AMAA" + b"A" * 60 + b"\n", [b"TVqQ.AMA*"])


def test_folded_content_type() -> None:
    header = b'Content-Type: multipart/mixed;\n\tcharset=us-ascii;\n boundary="fold"\n\n'
    message = TOP + header + b"--fold\n" + attachment(PE) + b"--fold--\n"
    assert scan(message)
    # a folded line after another field does not extend Content-Type
    other = b"Content-Type: text/plain\nX-Other: 1\n boundary=fold\n\nhello\n--fold\n"
    assert not scan(TOP + other + attachment(PE))


def test_boundary_must_follow_a_semicolon() -> None:
    header = b"Content-Type: multipart/mixed boundary=nb\n\n"
    # no boundary recognised: the first body line is "--nb", and the part is never split
    assert not scan(TOP + header + b"--nb\n" + attachment(PE) + b"--nb--\n")


def test_quoted_boundary_with_blanks_and_params_before_it() -> None:
    header = b'Content-Type: multipart/mixed; charset="x"; BOUNDARY="a b;c"\n\n'
    assert scan(TOP + header + b"--a b;c\n" + attachment(PE) + b"--a b;c--\n")


def test_closing_delimiter_pops_back_to_the_enclosing_boundary() -> None:
    inner = b'Content-Type: multipart/related; boundary="i"\n\n--i\n' + attachment(b"AAAA\n")
    inner += b"--i--\n"
    # after --i-- the current boundary is --o again: the next --o starts a part header
    assert scan(TOP + multipart(b"o", inner, attachment(PE)))
    # once the outermost multipart is closed there is no boundary left: all is body
    assert not scan(TOP + multipart(b"o", inner) + b"--o\n" + attachment(PE))
    # "--o-" is not a closing delimiter (two dashes must follow): a part header follows
    assert scan(TOP + multipart(b"o", inner).replace(b"--o--", b"--o-") + attachment(PE))


def test_message_rfc822_is_any_prefix_of_the_type() -> None:
    # qmail's case_diffb compares only the type's length (and the literal's NUL)
    sig_line = b"\n\nTVqQAAMAAAAEAAAA\n"
    for kind in (b"message/rfc822", b"Message", b"m", b"  ", b";x=1", b"message/rfc822\0"):
        assert not scan(TOP + b"Content-Type:" + kind + sig_line), kind
    # "Content-Type:" with nothing after it leaves no value at all: a plain message
    assert scan(TOP + b"Content-Type:" + sig_line)
    for kind in (b"text/plain", b"message/rfc822x", b"message/partial", b"message/rfc822\0x"):
        assert scan(TOP + b"Content-Type: " + kind + sig_line), kind


def test_boundary_with_nul_compares_up_to_the_nul() -> None:
    # str_diffn stops where both strings hold a NUL: "--b\0y" is a delimiter of "--b\0x"
    header = b"Content-Type: multipart/mixed; boundary=b\0x\n\n"
    assert scan(TOP + header + b"--b\0y\n" + attachment(PE))
    assert not scan(TOP + header + b"--b\1x\n" + attachment(PE))


def test_part_without_content_type_reuses_the_previous_one() -> None:
    # the original never resets the Content-Type value between headers: a part header
    # without one pushes the enclosing boundary again (kept for fidelity)
    part = b"Content-Transfer-Encoding: base64\n\n" + PE
    assert scan(TOP + multipart(b"p", part))


def test_bounce_text_is_skipped_and_the_enclosed_copy_is_parsed() -> None:
    # The original (qfilter viruscan.c, indimail smtpd.c put()): a first body line
    # "Hi. This is the " / Exim's text sets flagqsbmf; the bounce text is not looked at
    # until a "---" line, which turns the following lines into a header: the enclosed
    # copy's header.  So the copy is scanned as a message of its own (spec 11 says
    # "skipped"; the code it cites does this).
    copy = TOP + multipart(b"bb", attachment(PE))
    bounce = (
        TOP + b"\nHi. This is the qmail-send program at example.com.\n"
        b"I'm afraid I wasn't able to deliver your message.\n\n"
        b"--- Below this line is a copy of the message.\n\n" + copy
    )
    assert scan(bounce)
    exim = bounce.replace(
        b"Hi. This is the qmail-send program",
        b"This message was created automatically by mail delivery software",
    )
    assert scan(exim)
    # without the bounce text everything after the first body line is plain body
    assert not scan(bounce.replace(b"Hi. This is the", b"Hello, this is the"))
    # a bounce inside a multipart part: the --- line still opens the copy's header
    text = b"Content-Type: text/plain\n\nHi. This is the qmail-send program.\n\n--- copy\n\n"
    assert scan(TOP + multipart(b"m", text + TOP + b"\n" + PE))
    # the bounce text itself, up to the --- line, is never compared with the signatures
    assert not scan(TOP + b"\nHi. This is the qmail-send program.\n\n" + PE)


def test_lines_are_capped_at_1024_bytes() -> None:
    sig = b"A" * (LINE_MAX - 1)
    # 1023 bytes + LF = 1024: strictly longer than the signature
    assert scan(TOP + b"\n" + sig + b"\n", [sig])
    # a longer line is cut to 1024 bytes (no LF): still longer than 1023
    assert scan(TOP + b"\n" + sig + b"BBBB\n", [sig])
    # a 1024-byte signature can never be strictly shorter than a line
    assert not scan(TOP + b"\n" + sig + b"AAAA\n", [sig + b"A"])


def test_found_is_sticky_and_feeding_after_it_is_cheap() -> None:
    scanner = Scanner(SEED)
    scanner.feed(TOP + b"\n" + PE)
    assert scanner.found
    scanner.feed(b"\n--x\n" * 1000)
    assert scanner.found


def test_empty_signature_matches_every_first_line() -> None:
    assert scan(TOP + b"\nx\n", [b""])
    assert not scan(TOP + b"\n\n", [b"x"])


# -- nesting (issue 12 item 4) ----------------------------------------------------------


def nested(depth: int, inner: bytes) -> bytes:
    """*depth* multiparts one inside the other, distinct boundaries, *inner* in the last."""
    head, tail = [TOP], [b"epilogue\n"]
    for level in range(depth):
        boundary = b"b%d" % level
        head.append(b"Content-Type: multipart/mixed; boundary=" + boundary + b"\n\n")
        head.append(b"--" + boundary + b"\n")
        tail.append(b"--" + boundary + b"--\n")
    return b"".join(head) + inner + b"".join(reversed(tail))


def test_executable_at_the_depth_limit_is_found() -> None:
    message = nested(DEPTH_MAX, attachment(PE))
    assert scan(message)
    scanner = Scanner(SEED)
    scanner.feed(message)
    assert not scanner.too_deep


@pytest.mark.parametrize("depth", [DEPTH_MAX + 1, 200, 10_000])
def test_deeper_than_the_limit_is_flagged_not_passed(depth: int) -> None:
    # An executable at depth 64 and more got 250: the push past DEPTH_MAX was ignored.
    message = nested(depth, attachment(PE))
    scanner = Scanner(SEED)
    for offset in range(0, len(message), 65536):
        scanner.feed(message[offset : offset + 65536])
        # bounded: nothing kept grows with the depth past the limit
        assert scanner.retained <= LINE_MAX + DEPTH_MAX * (LINE_MAX + 1) + 4096
    assert scanner.too_deep and not scanner.found
    clean = Scanner(SEED)
    clean.feed(nested(depth, b"Content-Type: text/plain\n\nhello\n"))
    assert clean.too_deep


def test_many_parts_without_content_type_are_not_depth() -> None:
    # A part header without Content-Type pushes the enclosing boundary again (the
    # original's quirk); 200 such parts (a digest) are one level, and the part after
    # the close is still scanned.
    plain = b"X-Note: n\n\ntext\n"
    message = TOP + multipart(b"p", *[plain] * 200, attachment(PE))
    scanner = Scanner(SEED)
    scanner.feed(message)
    assert scanner.found and not scanner.too_deep
    after = TOP + multipart(b"p", *[plain] * 200) + b"--p\n" + attachment(PE)
    assert scan(after)  # the original keeps every push: "--p" is still live


# -- loading ----------------------------------------------------------------------------


def write(tmp_path: Path, text: bytes) -> Path:
    (tmp_path / "signatures").write_bytes(text)
    return tmp_path


def test_load_missing_or_empty_disables(tmp_path: Path) -> None:
    assert Signatures.load(tmp_path) is None
    assert Signatures.load(write(tmp_path, b"")) is None
    assert Signatures.load(write(tmp_path, b"# only\n\n  \t\n#UEsDBBQAA\n")) is None


def test_load_reads_like_control_readfile(tmp_path: Path) -> None:
    text = b"# Windows PE\nTVqQAAMAA \t\n\n  TVpQAAIAA\n#UEsDBBQAA\nAB\0CD\n\0XY\n"
    loaded = Signatures.load(write(tmp_path, text))
    assert loaded is not None
    assert loaded.entries == (b"TVqQAAMAA", b"  TVpQAAIAA", b"AB", b"CD")
    scanner = loaded.scanner()
    scanner.feed(TOP + b"\nTVqQAAMAAAA\n")
    assert scanner.found


def test_load_unreadable_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "signatures").mkdir()
    with pytest.raises(ConfigError):
        Signatures.load(tmp_path)


def test_executableok_with_any_value_disables() -> None:
    assert disabled_by({"EXECUTABLEOK": ""})
    assert disabled_by({"EXECUTABLEOK": "0"})
    assert not disabled_by({"RELAYCLIENT": ""})


def test_plain_megabyte_body_is_fast() -> None:
    body = TOP + b"\nHello\n" + (b"x" * 75 + b"\n") * (1 << 14)
    scanner = Scanner(SEED)
    started = time.perf_counter()
    for offset in range(0, len(body), 65536):
        scanner.feed(body[offset : offset + 65536])
    assert time.perf_counter() - started < 0.5  # generous: the real figure is ~1000x less
    assert not scanner.found
