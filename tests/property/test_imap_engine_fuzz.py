"""ImapConnection under arbitrary input and chunking, and generated commands round-trip.

- any bytes, cut anywhere: no exception, at most ``max_line`` bytes buffered whenever the
  engine waits for input, the same events and output whatever the chunking, every output
  line CRLF-ended;
- commands generated from the grammar (sequence sets, strings as atom, quoted or literal,
  flags, fetch items, search keys) parse to the values they were generated from.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from qtoaster.protocols.imap import commands as c
from qtoaster.protocols.imap.commands import STAR, FetchItem, SearchKey, Section, SequenceSet
from qtoaster.protocols.imap.server import NEED_DATA, ImapConnection, State

MAX_LINE = 64


@dataclass
class Session:
    conn: ImapConnection
    events: list[object] = field(default_factory=list)

    def pump(self) -> None:
        conn = self.conn
        while (event := conn.next_event()) is not NEED_DATA:
            self.events.append(event)
            match event:
                case c.Command(tag=tag, body=c.Login() | c.Select()):
                    conn.state = State.SELECTED
                    conn.tagged(tag, "OK", "ok")
                case c.Command(tag=tag, body=c.Authenticate()):
                    conn.continuation("")
                    conn.expect_auth_line()
                case c.Command(tag=tag, body=c.Idle()):
                    conn.continuation("idling")
                    conn.start_idle()
                case c.Command(tag=tag, body=c.Logout()):
                    conn.tagged(tag, "OK", "bye")
                    conn.state = State.LOGOUT
                    conn.close_after_send()
                case c.Command(tag=tag, body=c.StartTls()):
                    conn.tagged(tag, "NO", "not now")  # a discard depends on the chunking
                case c.Command(tag=tag):
                    conn.tagged(tag, "OK", "ok")
                case _:
                    pass
        if not conn.closed and conn.state is not State.LOGOUT:
            assert conn.buffered <= MAX_LINE


def run(chunks: list[bytes]) -> tuple[list[object], bytes]:
    conn = ImapConnection(max_line=MAX_LINE, max_literal=200, max_string_literal=50, max_errors=5)
    session = Session(conn)
    out = bytearray()
    for chunk in chunks:
        conn.receive_data(chunk)
        session.pump()
        out += conn.data_to_send()
    conn.receive_data(b"")
    session.pump()
    out += conn.data_to_send()
    return session.events, bytes(out)


ALPHABET = st.sampled_from(
    [
        b"a1 ",
        b"UID ",
        b"FETCH ",
        b"LOGIN ",
        b"APPEND ",
        b"SEARCH ",
        b"IDLE",
        b"DONE",
        b"{3}",
        b"{3+}",
        b"~{2+}",
        b"{999+}",
        b"{0}",
        b"\r\n",
        b"\n",
        b"(",
        b")",
        b'"',
        b"\\",
        b" ",
        b"1:*",
        b"x",
        b"\xff",
        b"*",
        b"AUTHENTICATE PLAIN",
        b"SELECT INBOX",
        b"BODY[",
        b"]",
        b"<0.5>",
        b"OR",
        b"NOT",
        b"LOGOUT",
    ]
)
INPUT = st.one_of(
    st.binary(max_size=400),
    st.lists(ALPHABET, max_size=80).map(b"".join),
)


def cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({p % (len(data) + 1) for p in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    return [p for p in pieces if p]  # b"" would be EOF


@settings(max_examples=300, deadline=None)
@given(data=INPUT, cuts=st.lists(st.integers(min_value=0), max_size=20))
def test_any_input_any_chunking(data: bytes, cuts: list[int]) -> None:
    whole = run([data])
    assert run(cut(data, cuts)) == whole
    assert run([data[i : i + 1] for i in range(len(data))]) == whole
    _, out = whole
    assert not out or out.endswith(b"\r\n")


# -- round trip ---------------------------------------------------------------------------

NUMBER = st.integers(min_value=1, max_value=2**32 - 1)
SEQ_NUM = st.one_of(NUMBER, st.just(STAR))
RANGES = st.lists(st.tuples(SEQ_NUM, SEQ_NUM), min_size=1, max_size=5)


def seq_text(ranges: list[tuple[int, int]]) -> str:
    def num(n: int) -> str:
        return "*" if n == STAR else str(n)

    return ",".join(num(a) if a == b else f"{num(a)}:{num(b)}" for a, b in ranges)


TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"), max_size=20
)


@st.composite
def encoded_string(draw: st.DrawFn, text: str) -> str:
    """text as an atom (when it can be), a quoted string or a literal."""
    raw = text.encode()
    kinds = ["quoted", "literal", "literal+"]
    if text and all(ch.isalnum() and ch.isascii() for ch in text):
        kinds.append("atom")
    kind = draw(st.sampled_from(kinds))
    if kind == "atom":
        return text
    if kind == "quoted":
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    plus = "+" if kind == "literal+" else ""
    return f"{{{len(raw)}{plus}}}\r\n{text}"


def parse(line: str, state: State = State.SELECTED) -> c.Command:
    conn = ImapConnection()
    conn.state = state
    conn.receive_data(line.encode() + b"\r\n")
    event = conn.next_event()
    assert isinstance(event, c.Command), (line, conn.data_to_send())
    return event


@settings(max_examples=200, deadline=None)
@given(user=TEXT, password=TEXT, data=st.data())
def test_login_strings_round_trip(user: str, password: str, data: st.DataObject) -> None:
    line = f"t LOGIN {data.draw(encoded_string(user))} {data.draw(encoded_string(password))}"
    assert parse(line, State.NOT_AUTHENTICATED).body == c.Login(user, password)


SIMPLE_ITEMS = st.sampled_from(
    ["FLAGS", "UID", "RFC822.SIZE", "ENVELOPE", "BODYSTRUCTURE", "MODSEQ", "INTERNALDATE"]
)
PART = st.lists(st.integers(min_value=1, max_value=99), max_size=3).map(tuple)


@st.composite
def body_item(draw: st.DrawFn) -> tuple[str, FetchItem]:
    part = draw(PART)
    peek = draw(st.booleans())
    text = draw(st.sampled_from(["", "HEADER", "TEXT"] + (["MIME"] if part else [])))
    spec = ".".join([*map(str, part), *([text] if text else [])])
    partial = draw(st.none() | st.tuples(st.integers(0, 10**6), st.integers(1, 10**6)))
    wire = f"BODY{'.PEEK' if peek else ''}[{spec}]"
    if partial:
        wire += f"<{partial[0]}.{partial[1]}>"
    return wire, FetchItem("BODY", Section(part, text), peek, partial)


@settings(max_examples=200, deadline=None)
@given(
    ranges=RANGES,
    items=st.lists(
        st.one_of(SIMPLE_ITEMS.map(lambda n: (n.lower(), FetchItem(n))), body_item()),
        min_size=1,
        max_size=6,
    ),
    uid=st.booleans(),
    changedsince=st.none() | st.integers(1, 2**63 - 1),
)
def test_fetch_round_trip(
    ranges: list[tuple[int, int]],
    items: list[tuple[str, FetchItem]],
    uid: bool,
    changedsince: int | None,
) -> None:
    line = f"t {'UID ' if uid else ''}FETCH {seq_text(ranges)} ({' '.join(w for w, _ in items)})"
    if changedsince is not None:
        line += f" (CHANGEDSINCE {changedsince})"
    command = parse(line)
    assert command.uid == uid
    assert command.body == c.Fetch(
        SequenceSet(tuple(ranges)), tuple(i for _, i in items), changedsince
    )


FLAG = st.sampled_from(["\\Seen", "\\Deleted", "\\Answered", "$Junk", "NonJunk", "\\Draft"])


@settings(max_examples=100, deadline=None)
@given(
    ranges=RANGES,
    mode=st.sampled_from(["", "+", "-"]),
    silent=st.booleans(),
    flags=st.lists(FLAG, max_size=4),
)
def test_store_round_trip(
    ranges: list[tuple[int, int]], mode: str, silent: bool, flags: list[str]
) -> None:
    line = (
        f"t STORE {seq_text(ranges)} {mode}FLAGS{'.SILENT' if silent else ''} ({' '.join(flags)})"
    )
    assert parse(line).body == c.Store(SequenceSet(tuple(ranges)), mode, tuple(flags), silent)


@st.composite
def search_key(draw: st.DrawFn, depth: int = 0) -> tuple[str, SearchKey]:
    choices = ["flag", "string", "date", "number", "uid"] + (
        ["not", "or", "and"] if depth < 3 else []
    )
    kind = draw(st.sampled_from(choices))
    if kind == "flag":
        name = draw(st.sampled_from(["SEEN", "UNSEEN", "DELETED", "NEW", "ALL"]))
        return name, SearchKey(name)
    if kind == "string":
        name, value = draw(st.sampled_from(["FROM", "SUBJECT", "BODY", "TO"])), draw(TEXT)
        return f"{name} {draw(encoded_string(value))}", SearchKey(name, value=value)
    if kind == "date":
        name = draw(st.sampled_from(["SINCE", "BEFORE", "SENTON"]))
        date = draw(st.dates(datetime.date(1000, 1, 1), datetime.date(9999, 12, 31)))
        return f"{name} {date.day}-{date.strftime('%b')}-{date.year:04d}", SearchKey(
            name, date=date
        )
    if kind == "number":
        name, n = draw(st.sampled_from(["LARGER", "SMALLER"])), draw(NUMBER)
        return f"{name} {n}", SearchKey(name, number=n)
    if kind == "uid":
        ranges = draw(RANGES)
        return f"UID {seq_text(ranges)}", SearchKey("UID", sequence=SequenceSet(tuple(ranges)))
    if kind == "not":
        wire, key = draw(search_key(depth + 1))
        return f"NOT {wire}", SearchKey("NOT", children=(key,))
    if kind == "or":
        (w1, k1), (w2, k2) = draw(search_key(depth + 1)), draw(search_key(depth + 1))
        return f"OR {w1} {w2}", SearchKey("OR", children=(k1, k2))
    keys = draw(st.lists(search_key(depth + 1), min_size=1, max_size=3))
    return "(" + " ".join(w for w, _ in keys) + ")", SearchKey(
        "AND", children=tuple(k for _, k in keys)
    )


@settings(max_examples=200, deadline=None)
@given(keys=st.lists(search_key(), min_size=1, max_size=4))
def test_search_round_trip(keys: list[tuple[str, SearchKey]]) -> None:
    line = "t SEARCH " + " ".join(w for w, _ in keys)
    assert parse(line).body == c.Search(tuple(k for _, k in keys))
