"""RFC 3461 parameters: xtext, NOTIFY, RET, ENVID, ORCPT (core/dsn.py)."""

from __future__ import annotations

import pytest

from qtoaster.core import dsn
from qtoaster.core.dsn import BAD_PARAMETER, MailDsn, RcptDsn


@pytest.mark.parametrize(
    ("raw", "text"),
    [(b"", ""), (b"a+b=c", "a+2Bb+3Dc"), (b"x y\x00\xff", "x+20y+00+FF"), (b"~!", "~!")],
)
def test_xtext_examples(raw: bytes, text: str) -> None:
    assert dsn.xtext_encode(raw) == text
    assert dsn.xtext_decode(text) == raw


@pytest.mark.parametrize("bad", ["a=b", "a b", "+2", "+2b", "+ZZ", "é", "a\r"])
def test_xtext_rejects(bad: str) -> None:
    assert dsn.xtext_decode(bad) is None


def test_mail_parameters() -> None:
    assert dsn.mail_dsn({}) == MailDsn()
    assert dsn.mail_dsn({"RET": "hdrs", "ENVID": "Q+2B"}) == MailDsn("HDRS", "Q+2B")
    for bad in ({"RET": None}, {"RET": "ALL"}, {"ENVID": ""}, {"ENVID": "a=b"}):
        assert dsn.mail_dsn(bad) is BAD_PARAMETER
    assert dsn.mail_dsn({"ENVID": "x" * 101}) is BAD_PARAMETER


def test_rcpt_parameters() -> None:
    assert dsn.rcpt_dsn({"NOTIFY": "never"}) == RcptDsn(frozenset({"NEVER"}))
    got = dsn.rcpt_dsn({"NOTIFY": "Delay,SUCCESS", "ORCPT": "RFC822;a+40b"})
    assert got == RcptDsn(frozenset({"DELAY", "SUCCESS"}), "rfc822;a+40b")
    for bad in (
        {"NOTIFY": "NEVER,SUCCESS"},
        {"NOTIFY": "SUCCESS,SUCCESS"},
        {"NOTIFY": ""},
        {"NOTIFY": None},
        {"ORCPT": "a@b"},
        {"ORCPT": ";a"},
        {"ORCPT": "rfc822;"},
        {"ORCPT": "rfc822;" + "a" * 500},
    ):
        assert dsn.rcpt_dsn(bad) is BAD_PARAMETER


def test_default_notify_is_failure_and_delay() -> None:
    """RFC 3461 4.1 lets the MTA choose; Postfix's FAILURE,DELAY."""
    absent = dsn.NO_RCPT_DSN
    assert dsn.notifies(absent, dsn.FAILURE) and dsn.notifies(absent, dsn.DELAY)
    assert not dsn.notifies(absent, dsn.SUCCESS)
    never = RcptDsn(frozenset({"NEVER"}))
    assert not any(dsn.notifies(never, k) for k in (dsn.SUCCESS, dsn.FAILURE, dsn.DELAY))


def test_format_notify_and_orcpt_text() -> None:
    assert dsn.format_notify(frozenset({"DELAY", "SUCCESS", "FAILURE"})) == (
        "SUCCESS,FAILURE,DELAY"
    )
    assert dsn.orcpt_text("rfc822;a+40b+2Bc") == "rfc822; a@b+c"
