"""auth/protocol.py: the auth role's codec (golden lines; any bytes decode or raise
ProtocolError, never anything else)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qtoaster.auth.protocol import (
    MechanismsRequest,
    MechanismsResponse,
    ProtocolError,
    VerifyRequest,
    VerifyResponse,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)

GOLDEN_VERIFY = (
    b'{"challenge":"PDEuMkBoPg==","id":7,"ip":"192.0.2.7","mechanism":"CRAM-MD5",'
    b'"op":"verify","secret":"YWJj","service":"smtp","user":"dGlt"}\n'
)


def test_golden_verify_request() -> None:
    request = VerifyRequest(7, "smtp", "CRAM-MD5", "tim", "abc", b"<1.2@h>", "192.0.2.7")
    assert encode_request(request) == GOLDEN_VERIFY
    assert decode_request(GOLDEN_VERIFY) == request


def test_golden_mechanisms() -> None:
    assert encode_request(MechanismsRequest(8)) == b'{"id":8,"op":"mechanisms"}\n'
    line = encode_response(MechanismsResponse(8, True, False))
    assert line == b'{"apop":false,"cram":true,"id":8,"ok":true}\n'
    assert decode_response(line) == MechanismsResponse(8, True, False)


def test_golden_verify_response() -> None:
    response = VerifyResponse(7, True, False, "tim@example.com", "password ok", 4)
    line = encode_response(response)
    assert line == (
        b'{"busy":false,"flags":4,"id":7,"ok":true,"reason":"password ok",'
        b'"temporary":false,"user":"dGltQGV4YW1wbGUuY29t"}\n'
    )
    assert decode_response(line) == response


def test_surrogate_escaped_bytes_travel_as_the_original_bytes() -> None:
    user = b"t\xffm".decode("utf-8", "surrogateescape")
    request = VerifyRequest(1, "pop3", "PLAIN", user, "p\udcfe", b"", "::1")
    assert decode_request(encode_request(request)) == request


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"nope\n",
        b"[]\n",
        b'{"id":"1","op":"mechanisms"}\n',
        b'{"id":true,"op":"mechanisms"}\n',
        b'{"id":1,"op":"other"}\n',
        b'{"id":1,"op":"verify","service":"imap"}\n',
        GOLDEN_VERIFY.replace(b'"dGlt"', b'"d!lt"'),
        GOLDEN_VERIFY.replace(b'"CRAM-MD5"', b"1"),
        b"[" * 100_000 + b"\n",
        b'{"id":1,"op":"mechanisms","x":"' + b"a" * 70_000 + b'"}\n',
    ],
)
def test_bad_requests_raise_protocol_error(line: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_request(line)


@given(st.binary(max_size=300))
def test_any_bytes_give_a_request_or_a_protocol_error(data: bytes) -> None:
    try:
        decode_request(data)
    except ProtocolError:
        pass


@given(st.binary(max_size=300))
def test_any_bytes_give_a_response_or_a_protocol_error(data: bytes) -> None:
    try:
        decode_response(data)
    except ProtocolError:
        pass


@given(
    st.integers(0, 2**63 - 1),
    st.sampled_from(["smtp", "pop3"]),
    st.sampled_from(["PLAIN", "LOGIN", "CRAM-MD5", "APOP"]),
    st.binary(max_size=50),
    st.binary(max_size=50),
    st.binary(max_size=50),
    st.text(max_size=40),
)
def test_round_trip(
    ident: int, service: str, mech: str, user: bytes, secret: bytes, chal: bytes, ip: str
) -> None:
    request = VerifyRequest(
        ident,
        service,
        mech,
        user.decode("utf-8", "surrogateescape"),
        secret.decode("utf-8", "surrogateescape"),
        chal,
        ip,
    )
    assert decode_request(encode_request(request)) == request


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "id",
                "op",
                "service",
                "mechanism",
                "user",
                "secret",
                "challenge",
                "ip",
                "cram",
                "apop",
                "ok",
                "temporary",
                "reason",
                "flags",
            ]
        ),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.text(max_size=8),
            st.lists(st.integers(), max_size=2),
        ),
    )
)
def test_any_json_object_gives_a_result_or_a_protocol_error(obj: dict[str, object]) -> None:
    import json

    line = json.dumps(obj).encode()
    for decode in (decode_request, decode_response):
        try:
            decode(line)
        except ProtocolError:
            pass
