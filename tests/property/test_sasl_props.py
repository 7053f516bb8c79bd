"""SASL server machines on arbitrary client input: never an exception, every exchange ends
in credentials or a 501 Failure, and well-formed answers round-trip any bytes."""

from __future__ import annotations

import base64

from hypothesis import given, settings
from hypothesis import strategies as st

from qtoaster.protocols.sasl import (
    CANCELED,
    MALFORMED,
    Challenge,
    CramCredentials,
    Failure,
    Mechanism,
    PlainCredentials,
    SaslServer,
)

CHALLENGE = b"<1896.697170952@postoffice.reston.mci.net>"


def _b64_of(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


# Junk, plausible base64 of junk, and the special lines ("*", "=", "", CR LF endings).
LINES = st.one_of(
    st.text(max_size=80),
    st.binary(max_size=60).map(_b64_of),
    st.sampled_from(["*", "=", "", "\r\n", "*\r\n", "=\r\n", "\r", "\n"]),
    st.binary(max_size=60).map(lambda raw: _b64_of(raw) + "\r\n"),
)
INITIAL = st.one_of(st.none(), LINES)


def _server(mechanism: Mechanism) -> SaslServer:
    return SaslServer(mechanism, cram_challenge=CHALLENGE)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(list(Mechanism)), INITIAL, st.lists(LINES, max_size=4))
def test_arbitrary_input_never_raises(
    mechanism: Mechanism, initial: str | None, lines: list[str]
) -> None:
    server = _server(mechanism)
    outcome = server.start(initial)
    steps = 0
    for line in lines:
        if not isinstance(outcome, Challenge):
            break
        outcome = server.step(line)
        steps += 1
    assert steps <= 2  # LOGIN is the longest exchange: two client lines
    if isinstance(outcome, Challenge):
        assert not server.done
    else:
        assert server.done
    if isinstance(outcome, Failure):
        assert outcome.reply in (CANCELED, MALFORMED)
    if isinstance(outcome, PlainCredentials):
        assert outcome.user and outcome.password
    if isinstance(outcome, CramCredentials):
        assert outcome.user and outcome.digest and outcome.challenge == CHALLENGE


NO_NUL = st.binary(min_size=1, max_size=40).filter(lambda raw: b"\0" not in raw)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=20).filter(lambda raw: b"\0" not in raw), NO_NUL, NO_NUL)
def test_plain_round_trips_any_bytes(authzid: bytes, user: bytes, password: bytes) -> None:
    result = _server(Mechanism.PLAIN).start(_b64_of(authzid + b"\0" + user + b"\0" + password))
    assert isinstance(result, PlainCredentials)
    assert result.user.encode("utf-8", "surrogateescape") == user
    assert result.password.encode("utf-8", "surrogateescape") == password


@settings(max_examples=200, deadline=None)
@given(NO_NUL, NO_NUL)
def test_login_round_trips_any_bytes(user: bytes, password: bytes) -> None:
    server = _server(Mechanism.LOGIN)
    server.start(None)
    server.step(_b64_of(user))
    result = server.step(_b64_of(password) + "\r\n")
    assert isinstance(result, PlainCredentials)
    assert result.user.encode("utf-8", "surrogateescape") == user
    assert result.password.encode("utf-8", "surrogateescape") == password


@settings(max_examples=200, deadline=None)
@given(
    st.binary(min_size=1, max_size=40).filter(lambda raw: not raw.endswith(b" ")),
    st.text("0123456789abcdef", min_size=32, max_size=32),
)
def test_cram_user_may_contain_spaces(user: bytes, digest: str) -> None:
    server = _server(Mechanism.CRAM_MD5)
    server.start(None)
    result = server.step(_b64_of(user + b" " + digest.encode()))
    assert result == CramCredentials(user.decode("utf-8", "surrogateescape"), digest, CHALLENGE)
