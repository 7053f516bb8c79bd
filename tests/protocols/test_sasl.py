"""SASL PLAIN, LOGIN and CRAM-MD5 server machines: every rule of spec 6.2 with exact replies,
RFC 2195's example, RFC 4954's empty initial response and cancel."""

from __future__ import annotations

import base64

import pytest

from qtoaster.core.reply import Reply
from qtoaster.protocols.sasl import (
    CANCELED,
    MALFORMED,
    PASSWORD_PROMPT,
    USERNAME_PROMPT,
    Challenge,
    CramCredentials,
    Failure,
    Mechanism,
    PlainCredentials,
    SaslServer,
    SaslStateError,
    cram_challenge,
    parse_mechanism,
)

RFC2195_CHALLENGE = b"<1896.697170952@postoffice.reston.mci.net>"
RFC2195_DIGEST = "b913a602c7eda7a495b4e6e7334d3890"


def b64(text: str | bytes) -> str:
    raw = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
    return base64.b64encode(raw).decode("ascii")


def cram() -> SaslServer:
    return SaslServer(Mechanism.CRAM_MD5, cram_challenge=RFC2195_CHALLENGE)


def test_exact_reply_texts() -> None:
    assert CANCELED.render() == b"501 auth exchange canceled (#5.0.0)\r\n"
    assert MALFORMED.render() == b"501 malformed auth input (#5.5.4)\r\n"
    assert base64.b64decode(USERNAME_PROMPT) == b"Username:"
    assert base64.b64decode(PASSWORD_PROMPT) == b"Password:"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("PLAIN", Mechanism.PLAIN),
        ("plain", Mechanism.PLAIN),
        ("Login", Mechanism.LOGIN),
        ("cram-md5", Mechanism.CRAM_MD5),
        ("CRAM-MD5", Mechanism.CRAM_MD5),
        ("CRAM_MD5", None),
        ("DIGEST-MD5", None),
        ("", None),
        ("plaın", None),  # dotless i upper-cases to I: not ASCII, not PLAIN
    ],
)
def test_parse_mechanism(name: str, expected: Mechanism | None) -> None:
    assert parse_mechanism(name) is expected


def test_cram_challenge_shape() -> None:
    assert cram_challenge(1896, 697170952, "postoffice.reston.mci.net") == RFC2195_CHALLENGE


# -- PLAIN ----------------------------------------------------------------------------


def test_plain_initial_response() -> None:
    server = SaslServer(Mechanism.PLAIN)
    result = server.start(b64("\0tim@example.com\0secret"))
    assert result == PlainCredentials("tim@example.com", "secret")
    assert server.done


def test_plain_without_initial_response_sends_empty_challenge() -> None:
    server = SaslServer(Mechanism.PLAIN)
    assert server.start(None) == Challenge("")
    assert not server.done
    assert server.step(b64("\0tim\0pw") + "\r\n") == PlainCredentials("tim", "pw")
    assert server.done


def test_plain_empty_string_is_no_initial_response() -> None:
    assert SaslServer(Mechanism.PLAIN).start("") == Challenge("")


def test_plain_authzid_is_ignored() -> None:
    server = SaslServer(Mechanism.PLAIN)
    assert server.start(b64("boss\0tim\0pw")) == PlainCredentials("tim", "pw")


@pytest.mark.parametrize(
    "message",
    ["\0\0pw", "\0tim\0", "tim\0pw", "tim", "\0tim\0pw\0", "a\0b\0c\0d", ""],
)
def test_plain_bad_shapes_are_malformed(message: str) -> None:
    assert SaslServer(Mechanism.PLAIN).start(b64(message) or "=") == Failure(MALFORMED)


def test_plain_equals_sign_is_empty_and_malformed() -> None:
    # RFC 4954 section 4: "=" is an empty initial response; PLAIN's user cannot be empty.
    assert SaslServer(Mechanism.PLAIN).start("=") == Failure(MALFORMED)


@pytest.mark.parametrize("bad", ["not base64!", "dGlt", "dGltAA=", "*", "dG ltAA==", "é"])
def test_plain_bad_base64_initial_response(bad: str) -> None:
    assert SaslServer(Mechanism.PLAIN).start(bad) == Failure(MALFORMED)


def test_plain_line_cases() -> None:
    for line, expected in [
        ("*", Failure(CANCELED)),
        ("*\r\n", Failure(CANCELED)),
        ("", Failure(MALFORMED)),
        ("\r\n", Failure(MALFORMED)),
        ("!!!!", Failure(MALFORMED)),
    ]:
        server = SaslServer(Mechanism.PLAIN)
        server.start(None)
        assert server.step(line) == expected
        assert server.done


def test_plain_keeps_raw_bytes_with_surrogateescape() -> None:
    server = SaslServer(Mechanism.PLAIN)
    result = server.start(b64(b"\0tim\0p\xe4ss"))
    assert isinstance(result, PlainCredentials)
    assert result.password.encode("utf-8", "surrogateescape") == b"p\xe4ss"
    utf8 = SaslServer(Mechanism.PLAIN).start(b64("\0jörg\0pässwort"))
    assert utf8 == PlainCredentials("jörg", "pässwort")


# -- LOGIN ----------------------------------------------------------------------------


def test_login_dialog() -> None:
    server = SaslServer(Mechanism.LOGIN)
    assert server.start(None) == Challenge("VXNlcm5hbWU6")
    assert server.step(b64("tim@example.com")) == Challenge("UGFzc3dvcmQ6")
    assert server.step(b64("secret") + "\r\n") == PlainCredentials("tim@example.com", "secret")
    assert server.done


def test_login_initial_response_is_the_user() -> None:
    server = SaslServer(Mechanism.LOGIN)
    assert server.start(b64("tim")) == Challenge(PASSWORD_PROMPT)
    assert server.step(b64("pw")) == PlainCredentials("tim", "pw")


@pytest.mark.parametrize("initial", ["=", "*", "%%%%"])
def test_login_bad_initial_response(initial: str) -> None:
    assert SaslServer(Mechanism.LOGIN).start(initial) == Failure(MALFORMED)


@pytest.mark.parametrize(
    ("line", "expected"),
    [("*", CANCELED), ("", MALFORMED), ("=", MALFORMED), ("@@@@", MALFORMED)],
)
def test_login_user_line_failures(line: str, expected: Reply) -> None:
    server = SaslServer(Mechanism.LOGIN)
    server.start(None)
    assert server.step(line) == Failure(expected)


@pytest.mark.parametrize(
    ("line", "expected"),
    [("*", CANCELED), ("*\r\n", CANCELED), ("", MALFORMED), ("abc", MALFORMED)],
)
def test_login_password_line_failures(line: str, expected: Reply) -> None:
    server = SaslServer(Mechanism.LOGIN)
    server.start(None)
    server.step(b64("tim"))
    assert server.step(line) == Failure(expected)
    assert server.done


def test_login_empty_decoded_password_is_malformed() -> None:
    server = SaslServer(Mechanism.LOGIN)
    server.start(b64("tim"))
    assert server.step("=") == Failure(MALFORMED)


# -- CRAM-MD5 -------------------------------------------------------------------------


def test_cram_rfc2195_example() -> None:
    server = cram()
    challenge = server.start(None)
    assert challenge == Challenge(b64(RFC2195_CHALLENGE))
    assert challenge.text == "PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+"
    # RFC 2195 section 2's client answer, base64 as the RFC prints it.
    answer = "dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw"
    result = server.step(answer + "\r\n")
    assert result == CramCredentials("tim", RFC2195_DIGEST, RFC2195_CHALLENGE)
    assert server.done


def test_cram_splits_at_the_last_space() -> None:
    server = cram()
    server.start(None)
    result = server.step(b64(f"Tim Smith {RFC2195_DIGEST}"))
    assert result == CramCredentials("Tim Smith", RFC2195_DIGEST, RFC2195_CHALLENGE)


def test_cram_extra_spaces_before_the_digest_are_skipped() -> None:
    # qmail splits at the first space and skips the rest (spec 20): same answer here.
    server = cram()
    server.start(None)
    assert server.step(b64(f"tim   {RFC2195_DIGEST}")) == CramCredentials(
        "tim", RFC2195_DIGEST, RFC2195_CHALLENGE
    )


@pytest.mark.parametrize(
    "answer", ["tim", f"tim{RFC2195_DIGEST}", f" {RFC2195_DIGEST}", "tim ", "   ", ""]
)
def test_cram_bad_answers_are_malformed(answer: str) -> None:
    server = cram()
    server.start(None)
    assert server.step(b64(answer)) == Failure(MALFORMED)


@pytest.mark.parametrize(("line", "expected"), [("*", CANCELED), ("", MALFORMED), ("x", MALFORMED)])
def test_cram_line_failures(line: str, expected: Reply) -> None:
    server = cram()
    server.start(None)
    assert server.step(line) == Failure(expected)


def test_cram_rejects_an_initial_response() -> None:
    # RFC 4954 section 4: server-first mechanism + initial response = 501.
    assert cram().start(b64(f"tim {RFC2195_DIGEST}")) == Failure(MALFORMED)


def test_cram_needs_a_challenge() -> None:
    with pytest.raises(ValueError):
        SaslServer(Mechanism.CRAM_MD5)


# -- driver errors ----------------------------------------------------------------------


def test_out_of_turn_calls_raise() -> None:
    server = SaslServer(Mechanism.PLAIN)
    with pytest.raises(SaslStateError):
        server.step("x")
    server.start(b64("\0a\0b"))
    with pytest.raises(SaslStateError):
        server.step("x")
    with pytest.raises(SaslStateError):
        server.start(None)
