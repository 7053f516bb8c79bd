"""The signatures scanner (spec 11) against two independent oracles, in any chunks.

1. ``Reference``: a byte-at-a-time transliteration of the original put() (qfilter
   viruscan.c / indimail smtpd.c), with qmail's case_diffb, case_startb and str_diffn,
   the NUL-separated boundary stack and no memory caps.  Fed MIME-ish line soup (folded
   Content-Types, quoted boundaries, delimiters, bounce texts, NULs, over-long lines),
   the scanner must agree with it for every chunking.
2. Messages built with Python's email package (attachments at any depth, message/rfc822
   parts, any line length): ``found`` must equal "some leaf part's first encoded line
   starts with a signature and is longer than it", computed from the email tree.

Plus: arbitrary bytes in arbitrary chunks never crash and keep memory bounded.
"""

from __future__ import annotations

import base64
import email.policy
from email.message import EmailMessage

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qtoaster.policy.signatures import CONTENT_MAX, DEPTH_MAX, LINE_MAX, Scanner

SIGS = [b"TVqQAAMAA", b"TVpQAAIAA", b"TVoAAAQAA", b"UEsDBBQAA"]
PE_HEAD = b"MZ\x90\x00\x03\x00\x00\x00"  # base64: TVqQAAMAAAA...
ZIP_HEAD = b"PK\x03\x04\x14\x00\x00"  # base64: UEsDBBQAA...

# -- oracle 1: the original, transliterated ----------------------------------------------


def _low(byte: int) -> int:
    return byte + 32 if 65 <= byte <= 90 else byte


def case_diffb(s: bytes, t: bytes) -> bool:
    """qmail case_diffb(s, len(s), t) == 0; t is a C string (its NUL terminator counts)."""
    t = t + b"\0"
    for k, byte in enumerate(s):
        if k >= len(t):
            return False  # beyond the literal: undefined in C, treated as different
        if _low(byte) != _low(t[k]):
            return False
    return True


def case_startb(s: bytes, t: bytes) -> bool:
    return len(s) >= len(t) and all(_low(a) == _low(b) for a, b in zip(s, t, strict=False))


def str_diffn_equal(s: bytes, t: bytes, n: int) -> bool:
    for k in range(n):
        if s[k] != t[k]:
            return False
        if s[k] == 0:
            return True
    return True


class Reference:
    def __init__(self, sigs: list[bytes]) -> None:
        self.sigs = b"".join(sig + b"\0" for sig in sigs)  # control_readfile layout
        self.line = bytearray()
        self.lps = 0
        self.content = b""
        self.linetype = " "
        self.boundary = bytearray()
        self.bstart = 0
        self.qsbmf = False
        self.found = False

    def put(self, ch: int) -> None:
        if len(self.line) < 1024:
            self.line.append(ch)
        if ch == 10:
            line = bytes(self.line)
            if self.lps == 0:
                self.header_line(line)
            else:
                self.body_line(line)
            self.line.clear()

    def header_line(self, line: bytes) -> None:
        if len(line) == 1:
            self.lps = 1
            if self.qsbmf:
                self.qsbmf = False
                self.lps = 0
            if self.content:
                self.mime(self.content)
        elif line[0] in b" \t":
            if self.linetype == "C":
                self.content += line[:-1]
        elif case_startb(line, b"content-type:"):
            self.content = line[13 : len(line) - 1]
            self.linetype = "C"
        else:
            self.linetype = " "

    def mime(self, c: bytes) -> None:
        n, cp = len(c), 0
        while cp < n and c[cp] in b" \t":
            cp += 1
        cpstart = cp
        if cp < n and c[cp] == 0x22:
            cp += 1
            cpstart = cp
            while cp < n and c[cp] != 0x22:
                cp += 1
        else:
            while cp < n and c[cp] not in b" \t;":
                cp += 1
        if case_diffb(c[cpstart:cp], b"message/rfc822"):
            self.lps = 0
        while True:
            while cp < n and c[cp] != 0x3B:  # byte_chr(';')
                cp += 1
            if cp == n:
                return
            cp += 1
            while cp < n and c[cp] in b" \t":
                cp += 1
            if case_startb(c[cp:], b"boundary="):
                cp += 9
                if cp < n and c[cp] == 0x22:
                    cp += 1
                    cpstart = cp
                    while cp < n and c[cp] != 0x22:
                        cp += 1
                else:
                    cpstart = cp
                    while cp < n and c[cp] not in b"; \t":
                        cp += 1
                self.boundary.append(0)
                self.bstart = len(self.boundary)
                self.boundary += b"--" + c[cpstart:cp]
                return

    def body_line(self, line: bytes) -> None:
        cur = bytes(self.boundary[self.bstart :])
        size = len(cur)
        if size and line[0] == 0x2D and len(line) > size and str_diffn_equal(line, cur, size):
            if len(line) > size + 2 and line[size] == 0x2D and line[size + 1] == 0x2D:
                if self.bstart:
                    del self.boundary[self.bstart - 1 :]
                start = len(self.boundary)
                while True:  # while (boundary_start--) if (!boundary.s[boundary_start]) break;
                    was = start
                    start -= 1
                    if was == 0 or self.boundary[start] == 0:
                        break
                self.bstart = start + 1
                self.lps = 2
            else:
                self.lps = 0
        elif self.lps == 1:
            if line.startswith(b"Hi. This is the ") or line.startswith(
                b"This message was created automatically by mail delivery software"
            ):
                self.qsbmf = True
            elif self.sigscheck(line):
                self.found = True
            self.lps = 2
        if self.qsbmf and line.startswith(b"---"):
            self.lps = 0

    def sigscheck(self, line: bytes) -> bool:
        j = 0
        for i, byte in enumerate(self.sigs):
            if byte == 0:
                if i - j < len(line) and str_diffn_equal(line, self.sigs[j:i], i - j):
                    return True
                j = i + 1
        return False


def reference(message: bytes, sigs: list[bytes]) -> bool:
    model = Reference(sigs)
    for byte in message:
        model.put(byte)
        if model.found:
            return True
    return False


def chunked(message: bytes, cuts: list[int], sigs: list[bytes]) -> Scanner:
    scanner = Scanner(sigs)
    last = 0
    for cut in [*sorted({c % (len(message) + 1) for c in cuts}), len(message)]:
        scanner.feed(message[last:cut])
        last = cut
    return scanner


# MIME-ish line soup: every construct the original reacts to, in any order
BOUNDS = [b"b1", b"b2", b"b\0x", b"b\0y", b"", b"a b"]
soup_line = st.one_of(
    st.sampled_from(
        [
            b"",
            b"Subject: x",
            b"Content-Type: text/plain",
            b"content-type: multipart/mixed;",
            b"CONTENT-TYPE:multipart/mixed; boundary=b1",
            b'Content-Type: multipart/alternative; boundary="b2"',
            b"Content-Type: multipart/mixed;boundary=b\0x",
            b'Content-Type: multipart/mixed; x=1;  Boundary="a b"',
            b"Content-Type: multipart/mixed; boundary=",
            b"Content-Type: message/rfc822",
            b'Content-Type: "message/rfc822"',
            b"Content-Type: message",
            b"Content-Type: message/rfc822\0",
            b"Content-Type:",
            b"Content-Type:   ",
            b" boundary=b2",
            b'\tboundary="b1"',
            b"  ; boundary=b1",
            b"Hi. This is the qmail-send program",
            b"This message was created automatically by mail delivery software.",
            b"--- Below this line is a copy of the message.",
            b"---",
            b"TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAA",
            b"TVqQAAMAA",
            b"TVqQAAMA",
            b"UEsDBBQAAAAIA",
            b"\0TVqQAAMAAA",
            b"plain text",
            b"\nTVqQAAMAAAAEAAAA",  # a header's blank line, then a signature line
            b"\nUEsDBBQAAAAI",
        ]
    ),
    st.builds(
        lambda b, tail: b"--" + b + tail,
        st.sampled_from(BOUNDS),
        st.sampled_from([b"", b"-", b"--", b"--x", b"x", b"\0"]),
    ),
    st.builds(lambda n, c: c * n, st.integers(1020, 1030), st.sampled_from([b"T", b"-"])),
    st.binary(max_size=12),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(soup_line, max_size=40),
    cuts=st.lists(st.integers(0, 1 << 16), max_size=6),
    sigs=st.lists(st.sampled_from([*SIGS, b"TVqQAAMA", b"", b"-", b"T" * 1023]), max_size=3),
)
def test_agrees_with_the_original_for_any_chunking(
    lines: list[bytes], cuts: list[int], sigs: list[bytes]
) -> None:
    message = b"\n".join(lines) + b"\n"
    expected = reference(message, sigs)
    assert chunked(message, cuts, sigs).found == expected
    by_byte = Scanner(sigs)
    for index in range(len(message)):
        by_byte.feed(message[index : index + 1])
    assert by_byte.found == expected


# -- oracle 2: the email tree ------------------------------------------------------------

POLICY = email.policy.default.clone(linesep="\n", max_line_length=None)
WIDTHS = st.sampled_from([8, 40, 76, 998, 1100, 2000])  # base64 line lengths
text_line = st.text(alphabet="abc xyz.,TVqQAM", max_size=1100)
payload = st.builds(
    lambda head, rest: head + rest,
    st.sampled_from([b"", PE_HEAD, ZIP_HEAD, b"MZ", b"\x00\x01"]),
    st.binary(max_size=200),
)


@st.composite
def trees(draw: st.DrawFn, depth: int = 0) -> EmailMessage:
    msg = EmailMessage(policy=POLICY.clone(max_line_length=draw(WIDTHS)))
    kind = draw(st.sampled_from(["text", "attach", "multi", "rfc822"] if depth < 3 else ["text"]))
    if kind == "text":
        lines = draw(st.lists(text_line, min_size=1, max_size=3))
        body = "\n".join(line for line in lines) + "\n"
        msg.set_content(body, cte="8bit")
    elif kind == "attach":
        data = draw(payload)
        msg.set_content(data, "application", "octet-stream", filename="f.bin")
    elif kind == "rfc822":
        msg.set_content(draw(trees(depth + 1)))
    else:
        msg.make_mixed()
        for part in draw(st.lists(trees(depth + 1), min_size=1, max_size=3)):
            msg.attach(part)
    return msg


def first_lines(msg: EmailMessage) -> list[bytes]:
    """The first encoded line (with its LF, cut to 1024 bytes) of every leaf part."""
    if msg.is_multipart():
        return [line for part in msg.iter_parts() for line in first_lines(part)]  # type: ignore[arg-type]
    if msg.get_content_type() == "message/rfc822":
        return first_lines(msg.get_content())
    payload = msg.get_payload(decode=False)
    assert isinstance(payload, str)
    first = payload.encode("utf-8", "surrogateescape").split(b"\n", 1)[0] + b"\n"
    return [first[:LINE_MAX]]


def expected_hit(msg: EmailMessage) -> bool:
    return any(
        len(sig) < len(line) and line.startswith(sig) for line in first_lines(msg) for sig in SIGS
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees(), cuts=st.lists(st.integers(0, 1 << 20), max_size=5))
def test_email_package_messages(tree: EmailMessage, cuts: list[int]) -> None:
    top = EmailMessage(policy=POLICY)
    top["From"] = "a@example.com"
    top["Subject"] = "test"
    if tree.is_multipart() or tree.get_content_type() == "message/rfc822":
        top.make_mixed()
        top.attach(tree)
    else:
        top = tree
    message = top.as_bytes(policy=POLICY)
    assert b"\r" not in message
    assert chunked(message, cuts, SIGS).found == expected_hit(top)


def test_oracle_sees_base64_pe_headers() -> None:
    assert base64.b64encode(PE_HEAD + b"\0" * 10).startswith(b"TVqQAAMAA")
    assert base64.b64encode(ZIP_HEAD + b"\0" * 10).startswith(b"UEsDBBQAA")


# -- robustness --------------------------------------------------------------------------

BOUND = LINE_MAX + CONTENT_MAX + DEPTH_MAX * (LINE_MAX + 1) + LINE_MAX


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=4000), cuts=st.lists(st.integers(0, 4000), max_size=8))
def test_arbitrary_bytes_never_crash_and_stay_bounded(data: bytes, cuts: list[int]) -> None:
    scanner = chunked(data, cuts, SIGS)
    assert scanner.retained <= BOUND


@settings(max_examples=30, deadline=None)
@given(width=st.integers(1, 2000), depth=st.integers(60, 200), fold=st.integers(0, 50))
def test_adversarial_nesting_and_folding_stay_bounded(width: int, depth: int, fold: int) -> None:
    boundary = b"q" * width
    header = b"Content-Type: multipart/mixed;\n" + b" x=" + b"y" * 900 + b"\n"
    header = header + b" z=1\n" * fold + b" ; boundary=" + boundary + b"\n\n"
    message = header + (b"--" + boundary + b"\n" + header) * depth
    scanner = Scanner(SIGS)
    scanner.feed(message)
    assert scanner.retained <= BOUND
