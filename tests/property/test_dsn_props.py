"""Any recipients, reports, sender and message give a parseable RFC 3464 DSN (issue #6)."""

from __future__ import annotations

import email
import email.policy
import re
from email.message import EmailMessage

from hypothesis import given, settings
from hypothesis import strategies as st

from qtoaster.core.envelope import decode, encode
from qtoaster.send.bounce import BounceParams, recipient_block
from qtoaster.send.dsn import build_dsn

PARAMS = BounceParams("MAILER-DAEMON", "mx.example.com", "postmaster", "example.com")
STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")

# text with LFs, CRs, non-ASCII and surrogateescape'd invalid bytes, as qmail reports can be
texts = st.one_of(
    st.text(),
    st.text(alphabet=st.sampled_from("ab \n\r:(#5.1)-Remote host said: 550")),
    st.binary().map(decode),
)
reports = st.one_of(
    texts,
    st.builds(
        lambda host, code, rest: (
            f"{host} does not like recipient.\n"
            f"Remote host said: {code} {rest}\nGiving up on {host}.\n"
        ),
        st.sampled_from(["192.0.2.1", "2001:db8::1", "mx.example", "x y", "\n"]),
        st.integers(200, 599),
        texts,
    ),
)
failures = st.lists(st.tuples(texts, reports), min_size=1, max_size=5)


@settings(max_examples=150, deadline=None)
@given(failures, texts, st.binary(max_size=300))
def test_dsn_always_parses(fails: list[tuple[str, str]], sender: str, original: bytes) -> None:
    bounce = build_dsn(sender, fails, PARAMS, 1e9, reporting_mta="mx.example.com", arrival=1e9)
    if sender in ("#@[]", "#@[]-@[]"):
        assert bounce is None
        return
    assert bounce is not None
    head = bounce.head.split(b"\n\n", 1)[0]
    assert b"\r" not in head
    assert all(len(line) <= 998 for line in bounce.head.split(b"\n"))
    message = email.message_from_bytes(
        bounce.head + original + bounce.tail, policy=email.policy.default
    )
    assert isinstance(message, EmailMessage)
    assert message.get_content_type() == "multipart/report"
    text, status, copy = message.iter_parts()
    assert status.get_content_type() == "message/delivery-status"
    assert copy.get_content_type() == "message/rfc822"
    # part 1 gives qmail's recipient blocks back byte for byte
    human = text.get_payload(decode=True)
    assert isinstance(human, bytes)
    assert human.endswith(encode("".join(recipient_block(r, t) for r, t in fails)))
    # part 2: the per-message block, then exactly one block per recipient
    blocks = status.get_payload()
    assert isinstance(blocks, list)
    assert all(isinstance(block, EmailMessage) for block in blocks)
    assert len(blocks) == 1 + len(fails)
    assert isinstance(blocks[0], EmailMessage)
    assert blocks[0]["Reporting-MTA"] == "dns; mx.example.com"
    for block in blocks[1:]:
        assert isinstance(block, EmailMessage)
        assert block["Final-Recipient"].split(";")[0] in ("rfc822", "utf-8")
        assert block["Action"] == "failed"
        assert STATUS.fullmatch(block["Status"])
    status_bytes = bounce.head.split(b"Content-Type: message/delivery-status\n", 1)[1]
    assert status_bytes.split(b"\n--", 1)[0].isascii()
