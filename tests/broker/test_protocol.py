"""broker/protocol.py: the mailbox broker's codec (golden lines; any bytes decode or raise
ProtocolError, never anything else, and a line over the limit is not parsed)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qtoaster.auth.protocol import (
    RedeemRequest,
    RedeemResponse,
    VerifyResponse,
)
from qtoaster.auth.protocol import (
    decode_request as auth_decode_request,
)
from qtoaster.auth.protocol import (
    decode_response as auth_decode_response,
)
from qtoaster.auth.protocol import (
    encode_request as auth_encode_request,
)
from qtoaster.auth.protocol import (
    encode_response as auth_encode_response,
)
from qtoaster.broker.protocol import (
    MAX_REQUEST,
    Answer,
    CommitRequest,
    FetchRequest,
    OpenRequest,
    ProtocolError,
    QuotaRequest,
    decode_answer,
    decode_request,
    encode_answer,
    encode_request,
)

TICKET = "0123456789abcdef0123456789abcdef"
GOLDEN = [
    (OpenRequest(TICKET), b'{"op":"open","ticket":"0123456789abcdef0123456789abcdef"}\n'),
    (FetchRequest(3), b'{"n":3,"op":"fetch"}\n'),
    (CommitRequest((1, 4)), b'{"deleted":[1,4],"op":"commit"}\n'),
    (
        QuotaRequest("/h/d/u/Maildir", 1000, None),
        b'{"bytes":1000,"maildir":"/h/d/u/Maildir","messages":null,"op":"quota"}\n',
    ),
]


@pytest.mark.parametrize(("request_", "line"), GOLDEN)
def test_golden_requests(request_: object, line: bytes) -> None:
    assert encode_request(request_) == line  # type: ignore[arg-type]
    assert decode_request(line) == request_


def test_golden_answers() -> None:
    listing = Answer(True, maildir="/m", messages=(("1.M1P1Q1.h", 10, 9), ("\udcff", 2, 2)))
    line = b'{"maildir":"/m","messages":[["1.M1P1Q1.h",10,9],["\\udcff",2,2]],"ok":true}\n'
    assert encode_answer(listing) == line and decode_answer(line) == listing
    busy = Answer(False, "in-use", "your mailbox is in use by another session")
    line = b'{"error":"in-use","ok":false,"text":"your mailbox is in use by another session"}\n'
    assert encode_answer(busy) == line and decode_answer(line) == busy
    assert encode_answer(Answer(True, disk=120)) == b'{"disk":120,"ok":true}\n'
    assert encode_answer(Answer(True, percent=93)) == b'{"ok":true,"percent":93}\n'


def test_auth_ticket_and_redeem_golden() -> None:
    verify = VerifyResponse(7, True, False, "tim@example.test", "password ok", 0, ticket=TICKET)
    line = auth_encode_response(verify)
    assert line.endswith(
        b',"ticket":"' + TICKET.encode() + b'","user":"dGltQGV4YW1wbGUudGVzdA=="}\n'
    )
    assert auth_decode_response(line) == verify
    redeem = RedeemRequest(9, TICKET)
    assert auth_encode_request(redeem) == (
        b'{"id":9,"op":"redeem","ticket":"0123456789abcdef0123456789abcdef"}\n'
    )
    assert auth_decode_request(auth_encode_request(redeem)) == redeem
    answer = RedeemResponse(9, True, "tim@example.test", "/h/Maildir")
    assert auth_encode_response(answer) == (
        b'{"id":9,"maildir":"L2gvTWFpbGRpcg==","ok":true,"user":"dGltQGV4YW1wbGUudGVzdA=="}\n'
    )
    assert auth_decode_response(auth_encode_response(answer)) == answer


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"[]\n",
        b'{"op":"open","ticket":"xyz"}\n',
        b'{"op":"open","ticket":"0123456789ABCDEF0123456789ABCDEF"}\n',
        b'{"op":"fetch","n":0}\n',
        b'{"op":"fetch","n":true}\n',
        b'{"op":"fetch","n":99999999999}\n',
        b'{"op":"commit","deleted":[1,-2]}\n',
        b'{"op":"quota","maildir":"/m","bytes":-1,"messages":null}\n',
        b'{"op":"delete"}\n',
        b"[" * 100000 + b"\n",
        b'{"op":"fetch","n":' + b"9" * 5000 + b"}\n",
    ],
)
def test_bad_requests_are_protocol_errors(line: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_request(line)


def test_an_overlong_line_is_refused_unread() -> None:
    with pytest.raises(ProtocolError, match="too long"):
        decode_request(b'{"op":"commit","deleted":[' + b"1," * MAX_REQUEST + b"1]}\n")


@settings(max_examples=300)
@given(st.binary(max_size=2048))
def test_any_bytes_decode_or_raise_protocol_error(data: bytes) -> None:
    for decode in (decode_request, decode_answer):
        try:
            decode(data)
        except ProtocolError:
            pass


@settings(max_examples=200)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=20,
    ),
    st.sampled_from(["open", "fetch", "commit", "quota", "x"]),
)
def test_any_json_object_decodes_or_raises_protocol_error(value: object, op: str) -> None:
    import json

    for key in ("ticket", "n", "deleted", "maildir", "bytes", "messages"):
        line = json.dumps({"op": op, key: value}).encode() + b"\n"
        try:
            decode_request(line)
        except ProtocolError:
            pass
