"""rblsmtpd's dialog under arbitrary input and chunking, and rbl's pure helpers.

The dialog never raises, keeps a bounded line buffer, answers only its four kinds of line,
closes exactly at a QUIT and gives the same output whatever the chunking.
"""

from __future__ import annotations

import ipaddress
import itertools

from hypothesis import given
from hypothesis import strategies as st

from qtoaster.core.reply import Reply
from qtoaster.policy.rbl import MAX_TEXT, clean, client_address, env_decision, reversed_name
from qtoaster.smtpd.rblsmtpd import ACCEPTED, BYE, MAX_LINE, RblsmtpdDialog

REFUSAL = Reply(451, "listed")
VERBS = [b"HELO x", b"EHLO", b"MAIL FROM:<>", b"RCPT TO:<a@b>", b"DATA", b"QUIT", b"rset", b""]

lines = st.one_of(st.sampled_from(VERBS), st.binary(max_size=40), st.just(b"x" * 3000))
endings = st.sampled_from([b"\r\n", b"\n", b"\r", b""])
inputs = st.lists(st.tuples(lines, endings), max_size=30).map(
    lambda parts: b"".join(line + end for line, end in parts)
)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def run(chunks: list[bytes]) -> tuple[bytes, bool]:
    dialog = RblsmtpdDialog(REFUSAL)
    out = b""
    closed = False
    for chunk in chunks:
        reply, closed = dialog.feed(chunk)
        out += reply
        assert len(dialog._line) <= MAX_LINE
    return out, closed


@given(inputs, st.lists(st.integers(min_value=0), max_size=20))
def test_dialog_is_total_bounded_and_chunking_independent(data: bytes, cuts: list[int]) -> None:
    whole, closed = run([data])
    assert run(chunked(data, cuts)) == (whole, closed)
    replies = whole.split(b"\r\n")
    assert replies.pop() == b""
    refusal = REFUSAL.render()[:-2]
    assert all(r in (ACCEPTED[:-2], BYE[:-2], refusal) for r in replies)
    assert len(replies) <= data.count(b"\n")
    assert closed == (BYE[:-2] in replies)
    assert BYE[:-2] not in replies[:-1]  # nothing is answered after QUIT


@given(st.binary(max_size=5000))
def test_arbitrary_bytes_byte_by_byte(data: bytes) -> None:
    assert run([data[i : i + 1] for i in range(len(data))]) == run([data])


@given(st.binary(max_size=400))
def test_clean_is_bounded_and_printable(raw: bytes) -> None:
    text = clean(raw)
    assert len(text) == min(len(raw), MAX_TEXT)
    assert all(32 <= ord(c) <= 126 for c in text)


@given(st.text(max_size=400))
def test_env_decision_is_a_clean_one_line_reply(value: str) -> None:
    decided, block = env_decision({"RBLSMTPD": value})
    assert decided and (block is None) == (value == "")
    if block is not None:
        assert block.code == (553 if value.startswith("-") else 451)
        rendered = block.reply.render()
        assert rendered.count(b"\r\n") == 1 and len(rendered) <= 4 + MAX_TEXT + 2


@given(st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)))
def test_reversed_name_reverses(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    found = client_address(str(address))
    assert found is not None
    labels = reversed_name(found).split(".")
    if found.version == 4:
        assert ".".join(reversed(labels)) == str(found)
    else:
        assert len(labels) == 32
        assert int("".join(reversed(labels)), 16) == int(found)
