"""DSN (RFC 3461 5.2) in the client engine: golden transcripts (test_smtp_client.py's
format, fed in one chunk and byte by byte).  A server that offers DSN gets RET/ENVID on
MAIL and NOTIFY/ORCPT on each RCPT, as received, and the success says it took them
(``TransactionResult.dsn``); a server that does not offer DSN gets none of them."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from hypothesis import given
from hypothesis import strategies as st
from tests.protocols.test_smtp_client import feed, run

from qtoaster.core.dsn import EnvelopeDsn, MailDsn, RcptDsn
from qtoaster.protocols.smtp.client import Transaction
from qtoaster.protocols.smtp.esmtpparams import mail_params, rcpt_params

__all__ = ["feed"]  # the fixture, imported for pytest

BODY = b"x\n"
DSN = EnvelopeDsn(
    MailDsn("HDRS", "Q+2B1"),
    {
        0: RcptDsn(frozenset({"SUCCESS", "FAILURE"}), "rfc822;b+40x.example"),
        2: RcptDsn(frozenset({"NEVER"})),
    },
)
THREE = Transaction(
    "a@me.example", ("b@x.example", "c@x.example", "d@x.example"), 2, False, dsn=DSN
)

OFFERED = """
    X: 0
    S: 220 mx.example ESMTP
    C: EHLO me.example
    S: 250-mx.example
    S: 250-PIPELINING
    S: 250 DSN
    E: Ready
    C: MAIL FROM:<a@me.example> RET=HDRS ENVID=Q+2B1
    C: RCPT TO:<b@x.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+40x.example
    C: RCPT TO:<c@x.example>
    C: RCPT TO:<d@x.example> NOTIFY=NEVER
    C: DATA
    S: 250 ok
    S: 250 ok
    S: 250 ok
    S: 250 ok
    S: 354 go ahead
    E: SendBody
    C: x
    C: .
    S: 250 ok queued
    E: Done K rrr
"""

NOT_OFFERED = """
    X: 0
    S: 220 mx.example ESMTP
    C: EHLO me.example
    S: 250-mx.example
    S: 250 PIPELINING
    E: Ready
    C: MAIL FROM:<a@me.example>
    C: RCPT TO:<b@x.example>
    C: RCPT TO:<c@x.example>
    C: RCPT TO:<d@x.example>
    C: DATA
    S: 250 ok
    S: 250 ok
    S: 250 ok
    S: 250 ok
    S: 354 go ahead
    E: SendBody
    C: x
    C: .
    S: 250 ok queued
    E: Done K rrr
"""


def test_dsn_offered_gets_the_parameters(feed: Callable[[bytes], Iterator[bytes]]) -> None:
    driver = run(OFFERED, [(THREE, BODY)], feed)
    assert driver.results[0].dsn is True


def test_dsn_not_offered_gets_none(feed: Callable[[bytes], Iterator[bytes]]) -> None:
    driver = run(NOT_OFFERED, [(THREE, BODY)], feed)
    assert driver.results[0].dsn is False


def test_a_failure_never_claims_the_hop_took_the_request() -> None:
    script = """
        X: 0
        S: 220 mx.example ESMTP
        C: EHLO me.example
        S: 250-mx.example
        S: 250 DSN
        E: Ready
        C: MAIL FROM:<a@me.example> RET=HDRS ENVID=Q+2B1
        S: 250 ok
        C: RCPT TO:<b@x.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+40x.example
        S: 250 ok
        C: DATA
        S: 354 go ahead
        E: SendBody
        C: x
        C: .
        S: 554 no
        E: Done D r
    """
    one = Transaction("a@me.example", ("b@x.example",), 2, False, dsn=DSN)
    [result] = run(script, [(one, BODY)], lambda data: iter([data] if data else [])).results
    assert result.dsn is False


def test_a_value_that_breaks_the_grammar_is_never_sent() -> None:
    bad = EnvelopeDsn(MailDsn(None, "a b\r\nRSET"), {0: RcptDsn(None, "rfc822;x y")})
    tx = Transaction("a@me.example", ("b@x.example",), 2, False, dsn=bad)
    assert mail_params(tx, {"DSN": None}) == b""
    assert rcpt_params(tx, 0, {"DSN": None}) == b""


@given(st.text(max_size=30), st.text(max_size=30))
def test_no_parameter_ever_carries_a_space_or_line_break(envid: str, orcpt: str) -> None:
    dsn = EnvelopeDsn(MailDsn("FULL", envid), {0: RcptDsn(frozenset({"DELAY"}), orcpt)})
    tx = Transaction("a@me.example", ("b@x.example",), 2, False, dsn=dsn)
    for params in (mail_params(tx, {"DSN": None}), rcpt_params(tx, 0, {"DSN": None})):
        words = params.split(b" ")
        assert words[0] == b"" and all(w and b"\r" not in w and b"\n" not in w for w in words[1:])
