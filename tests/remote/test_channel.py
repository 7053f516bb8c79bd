"""remote/channel.py: the framing between the send role and the remote delivery process.

Golden bytes pin the wire format; the properties say any bytes give messages or one
Malformed (never an exception, never a hang), that the buffer stays bounded, and that
every message round-trips whatever the chunking."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from qtoaster.core.outcome import Outcome, Result
from qtoaster.remote.channel import (
    HEADER,
    MAX_FRAME,
    Answer,
    Decoder,
    Deliver,
    Malformed,
    Message,
    encode,
    parse,
)

DELIVER = Deliver(7, 120, 3000, "a@b.example", ("x@far.example", "y@far.example"), "far.example")
DELIVER_BYTES = (
    b"\x00\x00\x00\x8c"
    b'{"t":"deliver","id":7,"offset":120,"size":3000,"sender":"a@b.example",'
    b'"recipients":["x@far.example","y@far.example"],"domain":"far.example"}'
)
ANSWER = Answer(
    7,
    (Result(Outcome.SUCCESS, "250 ok"), Result(Outcome.TEMPORARY, "451 caf\u00e9")),
    True,
)
ANSWER_BYTES = (
    b"\x00\x00\x00\x62"
    b'{"t":"answer","id":7,"reached":true,'
    b'"results":[["success","250 ok"],["deferral","451 caf\\u00e9"]]}'
)


def test_golden_bytes() -> None:
    assert encode(DELIVER) == DELIVER_BYTES
    assert encode(ANSWER) == ANSWER_BYTES
    assert Decoder().feed(DELIVER_BYTES + ANSWER_BYTES) == [DELIVER, ANSWER]


def test_a_frame_split_anywhere_decodes_once_whole() -> None:
    data = DELIVER_BYTES + ANSWER_BYTES
    for cut in range(len(data) + 1):
        decoder = Decoder()
        assert decoder.feed(data[:cut]) + decoder.feed(data[cut:]) == [DELIVER, ANSWER]


def test_an_oversized_length_fails_at_once_without_waiting_for_the_bytes() -> None:
    decoder = Decoder()
    out = decoder.feed(HEADER.pack(MAX_FRAME + 1))
    assert len(out) == 1 and isinstance(out[0], Malformed)
    assert decoder.feed(DELIVER_BYTES) == []  # broken for good: nothing more is trusted


def test_wrong_types_are_malformed() -> None:
    bad = [
        b"[]",
        b'{"t":"deliver"}',
        b'{"t":"deliver","id":true,"offset":0,"size":0,"sender":"","recipients":[],"domain":""}',
        b'{"t":"deliver","id":-1,"offset":0,"size":0,"sender":"","recipients":[],"domain":""}',
        b'{"t":"answer","id":1,"reached":1,"results":[]}',
        b'{"t":"answer","id":1,"reached":true,"results":[["maybe","x"]]}',
        b'{"t":"answer","id":1,"reached":true,"results":[["success"]]}',
        b'{"t":"other"}',
        b"\xff",
        b"[" * 100_000,  # deep nesting: RecursionError is caught
    ]
    for payload in bad:
        assert isinstance(parse(payload), Malformed), payload


def test_any_string_round_trips() -> None:
    odd = '\udcff\x00\u2028"\\'  # a lone surrogate (surrogateescape), NUL, quotes
    message = Deliver(1, 0, 0, odd, (odd,), odd)
    assert Decoder().feed(encode(message)) == [message]


TEXT = st.text(max_size=40)
COUNT = st.integers(min_value=0, max_value=2**53)
MESSAGES = st.one_of(
    st.builds(Deliver, COUNT, COUNT, COUNT, TEXT, st.lists(TEXT, max_size=5).map(tuple), TEXT),
    st.builds(
        Answer,
        COUNT,
        st.lists(st.builds(Result, st.sampled_from(Outcome), TEXT), max_size=5).map(tuple),
        st.booleans(),
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(MESSAGES, max_size=6), st.lists(st.integers(1, 64), max_size=40))
def test_messages_round_trip_through_any_chunking(msgs: list[Message], cuts: list[int]) -> None:
    data = b"".join(encode(m) for m in msgs)
    decoder = Decoder()
    out: list[Message | Malformed] = []
    position = 0
    for cut in cuts:
        out += decoder.feed(data[position : position + cut])
        position += cut
    out += decoder.feed(data[position:])
    assert out == msgs


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=10))
def test_any_bytes_give_messages_or_one_malformed(chunks: list[bytes]) -> None:
    decoder = Decoder()
    out: list[Message | Malformed] = []
    for chunk in chunks:
        out += decoder.feed(chunk)
        assert len(decoder._buffer) <= MAX_FRAME + HEADER.size  # bounded
    malformed = [i for i, m in enumerate(out) if isinstance(m, Malformed)]
    assert malformed in ([], [len(out) - 1])  # at most one, and nothing after it


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_payload_in_a_valid_frame_parses_or_is_malformed(payload: bytes) -> None:
    out = Decoder().feed(HEADER.pack(len(payload)) + payload)
    assert len(out) == 1
    assert isinstance(out[0], Deliver | Answer | Malformed)


def test_requiretls_travels_only_when_set() -> None:
    plain = Deliver(1, 0, 10, "a@b", ("c@d",), "d")
    assert b"requiretls" not in encode(plain)
    secret = Deliver(2, 0, 10, "a@b", ("c@d",), "d", requiretls=True)
    assert Decoder().feed(encode(plain) + encode(secret)) == [plain, secret]
    bad = b'{"t":"deliver","id":1,"offset":0,"size":1,"sender":"","recipients":[],'
    assert isinstance(parse(bad + b'"domain":"d","requiretls":1}'), Malformed)


def test_binarymime_travels_only_when_set() -> None:
    """RFC 3030: the ``binarymime`` origin flag reaches the remote process, as requiretls."""
    plain = Deliver(1, 0, 10, "a@b", ("c@d",), "d")
    assert b"binarymime" not in encode(plain)
    binary = Deliver(2, 0, 10, "a@b", ("c@d",), "d", binarymime=True)
    assert b'"binarymime":true' in encode(binary)
    assert Decoder().feed(encode(plain) + encode(binary)) == [plain, binary]
    bad = b'{"t":"deliver","id":1,"offset":0,"size":1,"sender":"","recipients":[],'
    assert isinstance(parse(bad + b'"domain":"d","binarymime":"yes"}'), Malformed)


def test_dsn_request_and_dsn_results_travel_only_when_set() -> None:
    """RFC 3461: the DSN request of a delivery (by position in its recipients) and a result's
    ``dsn`` mark round-trip; they are absent from the bytes when there are none."""
    from qtoaster.core.dsn import EnvelopeDsn, MailDsn, RcptDsn

    dsn = EnvelopeDsn(MailDsn("HDRS", "E+2B1"), {1: RcptDsn(frozenset({"NEVER"}), "rfc822;c")})
    request = Deliver(3, 0, 10, "a@b", ("x@d", "y@d"), "d", dsn=dsn)
    answer = Answer(3, (Result(Outcome.SUCCESS, "ok", True), Result(Outcome.SUCCESS, "ok")), True)
    assert b"dsn" not in encode(DELIVER)
    assert b'"dsn":{"mail":["RET=HDRS","ENVID=E+2B1"],"rcpts":[[1,["NOTIFY=NEVER",' in encode(
        request
    )
    assert b'[["success","ok",true],["success","ok"]]' in encode(answer)
    assert Decoder().feed(encode(request) + encode(answer)) == [request, answer]


def test_a_dsn_request_that_breaks_the_grammar_is_malformed() -> None:
    head = b'{"t":"deliver","id":1,"offset":0,"size":1,"sender":"","recipients":["a@b"],'
    for dsn in (
        b'{"mail":["RET=SOME"]}',
        b'{"mail":["ENVID=a b"]}',
        b'{"rcpts":[[1,["NOTIFY=NEVER"]]]}',  # no recipient at position 1
        b'{"rcpts":[[0,["NOTIFY=NEVER,DELAY"]]]}',
        b'{"rcpts":[[0,["ORCPT=rfc822;+4"]]]}',
        b'{"rcpts":[[true,[]]]}',
        b"[]",
    ):
        assert isinstance(parse(head + b'"domain":"d","dsn":' + dsn + b"}"), Malformed), dsn
    bad_result = b'{"t":"answer","id":1,"reached":true,"results":[["success","ok",1]]}'
    assert isinstance(parse(bad_result), Malformed)
