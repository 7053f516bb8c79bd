"""Hypothesis on RFC 3461 xtext and the DSN parameter grammar: round trips, never a crash."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from qtoaster.core import dsn
from qtoaster.core.reply import Reply


@given(st.binary(max_size=200))
def test_encode_then_decode_round_trips(raw: bytes) -> None:
    text = dsn.xtext_encode(raw)
    assert text.isascii() and " " not in text and "=" not in text
    assert dsn.xtext_decode(text) == raw


@given(st.text(max_size=200))
def test_decode_never_crashes_and_reencodes(text: str) -> None:
    raw = dsn.xtext_decode(text)
    if raw is not None:
        assert dsn.xtext_decode(dsn.xtext_encode(raw)) == raw


_VALUES = st.one_of(st.none(), st.text(max_size=60))


@given(st.dictionaries(st.sampled_from(["RET", "ENVID", "NOTIFY", "ORCPT", "X"]), _VALUES))
def test_parameter_grammar_is_total(params: dict[str, str | None]) -> None:
    mail = dsn.mail_dsn(params)
    rcpt = dsn.rcpt_dsn(params)
    assert isinstance(mail, dsn.MailDsn | Reply)
    assert isinstance(rcpt, dsn.RcptDsn | Reply)
    if isinstance(rcpt, dsn.RcptDsn) and rcpt.notify is not None:
        assert dsn.parse_notify(dsn.format_notify(rcpt.notify)) == rcpt.notify
