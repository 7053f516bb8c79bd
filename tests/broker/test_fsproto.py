"""broker/fsproto.py: imapd's file protocol codec (golden lines, round trips; any bytes
decode or raise ProtocolError, never anything else; limits are enforced)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qtoaster.broker.fsproto import (
    MAX_FDS,
    MAX_REQUEST,
    MAX_STATS,
    FsAnswer,
    FsRequest,
    ProtocolError,
    decode_answer,
    decode_request,
    encode_answer,
    encode_request,
    fd_count,
)

TICKET = "0123456789abcdef0123456789abcdef"
GOLDEN_REQUESTS = [
    (
        FsRequest(1, "open", ticket=TICKET),
        b'{"id":1,"op":"open","ticket":"0123456789abcdef0123456789abcdef"}\n',
    ),
    (FsRequest(2, "listdir", path="cur"), b'{"id":2,"op":"listdir","path":"cur"}\n'),
    (
        FsRequest(3, "open_many", paths=("cur/a", "new/\udcff")),
        b'{"id":3,"op":"open_many","paths":["cur/a","new/\\udcff"]}\n',
    ),
    (
        FsRequest(4, "write_atomic", path="dovecot-uidlist", data=b"3 V1\n"),
        b'{"data":"MyBWMQo=","id":4,"op":"write_atomic","path":"dovecot-uidlist"}\n',
    ),
    (
        FsRequest(5, "rename_many", pairs=(("new/a", "cur/a:2,"),)),
        b'{"id":5,"op":"rename_many","pairs":[["new/a","cur/a:2,"]]}\n',
    ),
    (
        FsRequest(6, "deliver", folder=".Sent", data=b"x", info="S", mtime=None),
        b'{"data":"eA==","folder":".Sent","id":6,"info":"S","mtime":null,"op":"deliver"}\n',
    ),
    (
        FsRequest(7, "watch", dirs=("new", "cur"), timeout=1740.0),
        b'{"dirs":["new","cur"],"id":7,"op":"watch","timeout":1740.0}\n',
    ),
    (FsRequest(8, "quota"), b'{"id":8,"op":"quota"}\n'),
    (
        FsRequest(10, "stat_many", paths=("qtoaster-uidlist", "new")),
        b'{"id":10,"op":"stat_many","paths":["qtoaster-uidlist","new"]}\n',
    ),
    (
        FsRequest(11, "open_probe", paths=("cur/a",), probe=("qtoaster-uidlist", "new")),
        b'{"id":11,"op":"open_probe","paths":["cur/a"],"probe":["qtoaster-uidlist","new"]}\n',
    ),
    (
        FsRequest(9, "rename_folder", path=".a", new=".b"),
        b'{"id":9,"new":".b","op":"rename_folder","path":".a"}\n',
    ),
]
GOLDEN_ANSWERS = [
    (FsAnswer(1, True, maildir="/m"), b'{"id":1,"maildir":"/m","ok":true}\n'),
    (FsAnswer(2, True, names=("a", "b")), b'{"id":2,"names":["a","b"],"ok":true}\n'),
    (
        FsAnswer(3, True, present=(True, False)),
        b'{"id":3,"ok":true,"present":[true,false]}\n',
    ),
    (
        FsAnswer(4, False, "os", "No such file", errno="ENOENT"),
        b'{"errno":"ENOENT","error":"os","id":4,"ok":false,"text":"No such file"}\n',
    ),
    (
        FsAnswer(5, False, "store", "over quota", code="OVERQUOTA"),
        b'{"code":"OVERQUOTA","error":"store","id":5,"ok":false,"text":"over quota"}\n',
    ),
    (
        FsAnswer(6, True, results=(None, "ENOENT")),
        b'{"id":6,"ok":true,"results":[null,"ENOENT"]}\n',
    ),
    (FsAnswer(7, True, quota=(10, None, 1, 100)), b'{"id":7,"ok":true,"quota":[10,null,1,100]}\n'),
    (FsAnswer(8, True, changed=True), b'{"changed":true,"id":8,"ok":true}\n'),
    (FsAnswer(9, True), b'{"id":9,"ok":true}\n'),
    (FsAnswer(10, True, data=b"", missing=True), b'{"id":10,"missing":true,"ok":true}\n'),
    (FsAnswer(11, True, size=3, mtime=1.5), b'{"id":11,"mtime":1.5,"ok":true,"size":3}\n'),
    (
        FsAnswer(12, True, stats=((3, 1.5), None)),
        b'{"id":12,"ok":true,"stats":[[3,1.5],null]}\n',
    ),
]


@pytest.mark.parametrize(("request_", "line"), GOLDEN_REQUESTS)
def test_golden_requests(request_: FsRequest, line: bytes) -> None:
    assert encode_request(request_) == line
    assert decode_request(line) == request_


@pytest.mark.parametrize(("answer", "line"), GOLDEN_ANSWERS)
def test_golden_answers(answer: FsAnswer, line: bytes) -> None:
    assert encode_answer(answer) == line
    assert decode_answer(line) == answer


@pytest.mark.parametrize(
    "line",
    [
        b'{"id":0,"op":"quota"}\n',  # ids are positive
        b'{"id":1,"op":"nope"}\n',
        b'{"id":1,"op":"listdir"}\n',  # path missing
        b'{"id":1,"op":"open","ticket":"short"}\n',
        b'{"id":1,"op":"write_atomic","path":"x","data":"!!"}\n',
        b'{"id":1,"op":"watch","dirs":["new"],"timeout":-1}\n',
        b'{"id":1,"op":"watch","dirs":["new"],"timeout":NaN}\n',
        b'{"id":1,"op":"watch","dirs":["new"],"timeout":1' + b"0" * 400 + b"}\n",
        b'{"id":true,"op":"quota"}\n',
        b'{"id":1,"op":"rename_many","pairs":[["a"]]}\n',
        b"[1]\n",
        b"\xff\n",
    ],
)
def test_bad_requests_are_protocol_errors(line: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_request(line)


def test_limits() -> None:
    with pytest.raises(ProtocolError, match="too long"):
        decode_request(b" " * (MAX_REQUEST + 1))
    many = json.dumps({"id": 1, "op": "open_many", "paths": ["a"] * (MAX_FDS + 1)}).encode()
    with pytest.raises(ProtocolError, match="at most"):
        decode_request(many)
    stats = json.dumps({"id": 1, "op": "stat_many", "paths": ["a"] * (MAX_STATS + 1)}).encode()
    with pytest.raises(ProtocolError, match="at most"):
        decode_request(stats)
    probe = {"id": 1, "op": "open_probe", "paths": ["a"], "probe": ["a"] * (MAX_STATS + 1)}
    with pytest.raises(ProtocolError, match="at most"):
        decode_request(json.dumps(probe).encode())
    with pytest.raises(ProtocolError):
        decode_answer(b'{"id":1,"ok":true,"stats":[[1]]}\n')
    with pytest.raises(ProtocolError):
        decode_answer(b'{"id":1,"ok":true,"error":"nonsense"}\n')
    with pytest.raises(ProtocolError):
        decode_answer(b'{"id":1,"ok":false,"code":"not a code"}\n')


def test_fd_count() -> None:
    assert fd_count("open_read", FsAnswer(1, True)) == 1
    assert fd_count("lock", FsAnswer(1, True)) == 1
    assert fd_count("open_many", FsAnswer(1, True, present=(True, False, True))) == 2
    assert fd_count("open_probe", FsAnswer(1, True, present=(False, True))) == 1
    assert fd_count("open_read", FsAnswer(1, False, "os")) == 0
    assert fd_count("stat", FsAnswer(1, True)) == 0


texts = st.text(max_size=20)
requests = st.one_of(
    st.builds(lambda i, p: FsRequest(i, "stat", path=p), st.integers(1, 2**53 - 1), texts),
    st.builds(
        lambda i, ps: FsRequest(i, "unlink_many", paths=tuple(ps)),
        st.integers(1, 100),
        st.lists(texts, max_size=5),
    ),
    st.builds(
        lambda i, d, m: FsRequest(i, "deliver", folder="", data=d, info="S", mtime=m),
        st.integers(1, 100),
        st.binary(max_size=50),
        st.none() | st.floats(allow_nan=False, allow_infinity=False),
    ),
)


@given(requests)
def test_requests_round_trip(request_: FsRequest) -> None:
    assert decode_request(encode_request(request_)) == request_


@given(st.binary(max_size=300))
@settings(max_examples=300)
def test_any_bytes_decode_or_protocol_error(data: bytes) -> None:
    for decode in (decode_request, decode_answer):
        try:
            decode(data)
        except ProtocolError:
            pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
keys = st.sampled_from(
    [
        "id",
        "op",
        "ok",
        "path",
        "paths",
        "pairs",
        "data",
        "limit",
        "timeout",
        "dirs",
        "mtime",
        "quota",
        "present",
        "results",
        "names",
        "size",
        "error",
        "code",
        "ticket",
        "missing",
    ]
)


@given(st.dictionaries(keys, json_values), st.sampled_from(["quota", "stat", "deliver", "watch"]))
@settings(max_examples=300)
def test_any_json_object_decodes_or_protocol_error(obj: dict[str, object], op: str) -> None:
    obj.setdefault("op", op)
    line = json.dumps(obj).encode() + b"\n"
    for decode in (decode_request, decode_answer):
        try:
            decode(line)
        except ProtocolError:
            pass
