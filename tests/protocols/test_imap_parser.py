"""The IMAP grammar: commands (RFC 9051 examples and the extensions' RFC examples) parse to
the expected commands.py values; malformed ones get the expected BAD text."""

from __future__ import annotations

import datetime

import pytest

from qtoaster.protocols.imap import commands as c
from qtoaster.protocols.imap.commands import STAR, FetchItem, SearchKey, Section, SequenceSet
from qtoaster.protocols.imap.server import NEED_DATA, ImapConnection, State


def parse(data: bytes, state: State = State.SELECTED) -> c.Command:
    conn = ImapConnection()
    conn.state = state
    conn.receive_data(data if data.endswith(b"\n") else data + b"\r\n")
    event = conn.next_event()
    assert isinstance(event, c.Command), conn.data_to_send()
    assert conn.next_event() is NEED_DATA
    return event


def bad(data: bytes, state: State = State.SELECTED) -> bytes:
    conn = ImapConnection()
    conn.state = state
    conn.receive_data(data + b"\r\n")
    assert conn.next_event() is NEED_DATA
    return conn.data_to_send()


def seq(*ranges: tuple[int, int]) -> SequenceSet:
    return SequenceSet(tuple(ranges))


BODY = FetchItem("BODY")

CASES: list[tuple[bytes, c.Body]] = [
    (b"a LOGIN SMITH SESAME", c.Login("SMITH", "SESAME")),
    (b'a LOGIN "fred \\"x\\"" "a\\\\b"', c.Login('fred "x"', "a\\b")),
    (b"a AUTHENTICATE plain", c.Authenticate("PLAIN")),
    (b"a AUTHENTICATE PLAIN =", c.Authenticate("PLAIN", "=")),
    (b"a ENABLE CONDSTORE qresync", c.Enable(("CONDSTORE", "QRESYNC"))),
    (b'a ID ("name" "sodr" "version" NIL)', c.Id((("name", "sodr"), ("version", None)))),
    (b"a ID NIL", c.Id(None)),
    (b"a COMPRESS deflate", c.Compress("DEFLATE")),
    (b"a SELECT INBOX (CONDSTORE)", c.Select("INBOX", condstore=True)),
    (
        b"A02 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))",
        c.Select(
            "INBOX",
            qresync=(67890007, 20050715194045000, seq((41, 41), (43, 211), (214, 541)), None),
        ),
    ),
    (
        b"B04 SELECT INBOX (QRESYNC (67890007 90060115194045000 1:29997 "
        b"(5000,7500,9000,9990:9999 15000,22500,27000,29970,29973,29976,29979:29997)))",
        c.Select(
            "INBOX",
            qresync=(
                67890007,
                90060115194045000,
                seq((1, 29997)),
                (
                    seq((5000, 5000), (7500, 7500), (9000, 9000), (9990, 9999)),
                    seq(
                        (15000, 15000),
                        (22500, 22500),
                        (27000, 27000),
                        (29970, 29970),
                        (29973, 29973),
                        (29976, 29976),
                        (29979, 29997),
                    ),
                ),
            ),
        ),
    ),
    (b"a EXAMINE blurdybloop", c.Select("blurdybloop", readonly=True)),
    (b"t1 CREATE MySpecial (USE (\\Drafts \\Sent))", c.Create("MySpecial", ("\\Drafts", "\\Sent"))),
    (b"a RENAME {3+}\r\nold new", c.Rename("old", "new")),
    (b'A101 LIST "" ""', c.List("", ("",))),
    (b"A202 LIST ~/Mail/ %", c.List("~/Mail/", ("%",))),
    (
        b'A01 LIST (SUBSCRIBED RECURSIVEMATCH) "" ("INBOX" "Drafts" *) '
        b"RETURN (CHILDREN STATUS (MESSAGES UIDNEXT))",
        c.List(
            "",
            ("INBOX", "Drafts", "*"),
            ("SUBSCRIBED", "RECURSIVEMATCH"),
            ("CHILDREN", "STATUS"),
            ("MESSAGES", "UIDNEXT"),
        ),
    ),
    (b'a LSUB "#news." "comp.mail.*"', c.List("#news.", ("comp.mail.*",), lsub=True)),
    (
        b"A042 STATUS blurdybloop (UIDNEXT MESSAGES)",
        c.Status("blurdybloop", ("UIDNEXT", "MESSAGES")),
    ),
    (
        b'A003 APPEND saved-messages (\\seen) " 7-Feb-1994 21:52:25 -0800" {5+}\r\nhello',
        c.Append(
            "saved-messages",
            (
                c.AppendMessage(
                    b"hello",
                    ("\\Seen",),
                    datetime.datetime(
                        1994,
                        2,
                        7,
                        21,
                        52,
                        25,
                        tzinfo=datetime.timezone(datetime.timedelta(hours=-8)),
                    ),
                ),
            ),
        ),
    ),
    (  # RFC 6855 4: APPEND's UTF8 data extension
        b"a APPEND INBOX (\\Seen) UTF8 (~{2+}\r\nab)",
        c.Append("INBOX", (c.AppendMessage(b"ab", ("\\Seen",), binary=True),)),
    ),
    (
        b"a APPEND INBOX ~{2+}\r\nab (x) {1+}\r\nc",
        c.Append("INBOX", (c.AppendMessage(b"ab", binary=True), c.AppendMessage(b"c", ("x",)))),
    ),
    (b"a UID EXPUNGE 3000:3002", c.Expunge(seq((3000, 3002)))),
    (b"a EXPUNGE", c.Expunge()),
    (b"a IDLE", c.Idle()),
    (b"a GETQUOTAROOT INBOX", c.GetQuotaRoot("INBOX")),
    (b'a GETQUOTA ""', c.GetQuota("")),
    (
        b"a FETCH 2:4 ALL",
        c.Fetch(
            seq((2, 4)),
            tuple(FetchItem(n) for n in ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE")),
        ),
    ),
    (
        b"a FETCH 1 full",
        c.Fetch(
            seq((1, 1)),
            tuple(
                FetchItem(n) for n in ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY")
            ),
        ),
    ),
    (b"a FETCH $ body", c.Fetch(SequenceSet((), saved=True), (BODY,))),
    (
        b"A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])",
        c.Fetch(
            seq((2, 4)),
            (FetchItem("FLAGS"), FetchItem("BODY", Section((), "HEADER.FIELDS", ("DATE", "FROM")))),
        ),
    ),
    (
        b"a FETCH 1 (BODY.PEEK[1.2.MIME] BODY[3.HEADER.FIELDS.NOT (X-A)]<10.20> BODY[]<0.1> "
        b"BODY[4] BODY[TEXT])",
        c.Fetch(
            seq((1, 1)),
            (
                FetchItem("BODY", Section((1, 2), "MIME"), peek=True),
                FetchItem("BODY", Section((3,), "HEADER.FIELDS.NOT", ("X-A",)), partial=(10, 20)),
                FetchItem("BODY", Section(), partial=(0, 1)),
                FetchItem("BODY", Section((4,))),
                FetchItem("BODY", Section((), "TEXT")),
            ),
        ),
    ),
    (
        b"a FETCH *:4,1 (BINARY.PEEK[1]<0.100> BINARY[] BINARY.SIZE[2.1] MODSEQ)",
        c.Fetch(
            seq((STAR, 4), (1, 1)),
            (
                FetchItem("BINARY", Section((1,)), peek=True, partial=(0, 100)),
                FetchItem("BINARY", Section()),
                FetchItem("BINARY.SIZE", Section((2, 1))),
                FetchItem("MODSEQ"),
            ),
        ),
    ),
    (
        b"s100 UID FETCH 300:500 (FLAGS) (CHANGEDSINCE 12345 VANISHED)",
        c.Fetch(seq((300, 500)), (FetchItem("FLAGS"),), 12345, True),
    ),
    (
        b"A003 STORE 2:4 +FLAGS (\\Deleted)",
        c.Store(seq((2, 4)), "+", ("\\Deleted",)),
    ),
    (
        b"d105 STORE 7,5,9 (UNCHANGEDSINCE 320162338) +FLAGS.SILENT (\\Deleted)",
        c.Store(seq((7, 7), (5, 5), (9, 9)), "+", ("\\Deleted",), True, 320162338),
    ),
    (b"a STORE 1 -flags \\seen $Forwarded", c.Store(seq((1, 1)), "-", ("\\Seen", "$Forwarded"))),
    (b"a STORE 1 FLAGS ()", c.Store(seq((1, 1)), "", ())),
    (b"A003 COPY 2:4 MEETING", c.Copy(seq((2, 4)), "MEETING")),
    (b"a UID MOVE 42:69 foo", c.Move(seq((42, 69)), "foo")),
    (
        b'A282 SEARCH RETURN (MIN COUNT) FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"',
        c.Search(
            (
                SearchKey("FLAGGED"),
                SearchKey("SINCE", date=datetime.date(1994, 2, 1)),
                SearchKey("NOT", children=(SearchKey("FROM", value="Smith"),)),
            ),
            returns=("MIN", "COUNT"),
        ),
    ),
    (b"a SEARCH RETURN () ALL", c.Search((SearchKey("ALL"),), returns=())),
    (
        b"a SEARCH CHARSET utf-8 TEXT {4+}\r\n\xc3\xa9t\xc3",
        c.Search((SearchKey("TEXT", value="\xe9t\udcc3"),), charset="UTF-8"),
    ),
    (
        b'a SEARCH MODSEQ "/flags/\\\\draft" all 620162338 YOUNGER 60 SENTBEFORE "2-Mar-2001" 5',
        c.Search(
            (
                SearchKey("MODSEQ", number=620162338),
                SearchKey("YOUNGER", number=60),
                SearchKey("SENTBEFORE", date=datetime.date(2001, 3, 2)),
                SearchKey("SEQSET", sequence=seq((5, 5))),
            )
        ),
    ),
]


@pytest.mark.parametrize(("line", "body"), CASES)
def test_parses(line: bytes, body: c.Body) -> None:
    login = line.split(b" ")[1].upper() in (b"LOGIN", b"AUTHENTICATE")
    command = parse(line, State.NOT_AUTHENTICATED if login else State.SELECTED)
    assert command.body == body
    assert command.tag == line.split(b" ")[0].decode()
    assert command.uid == (line.split(b" ")[1].upper() == b"UID")


def test_search_nesting() -> None:
    body = parse(b'a SEARCH OR (UNSEEN LARGER 100) HEADER X-Spam "yes" UID 1:*,5').body
    assert isinstance(body, c.Search)
    assert body.keys == (
        SearchKey(
            "OR",
            children=(
                SearchKey("AND", children=(SearchKey("UNSEEN"), SearchKey("LARGER", number=100))),
                SearchKey("HEADER", header="X-Spam", value="yes"),
            ),
        ),
        SearchKey("UID", sequence=seq((1, STAR), (5, 5))),
    )


def test_uid_search_of_the_saved_result() -> None:
    command = parse(b"a uid search $ unseen")
    assert command.uid
    assert command.body == c.Search(
        (SearchKey("SEQSET", sequence=SequenceSet((), saved=True)), SearchKey("UNSEEN"))
    )


@pytest.mark.parametrize(
    ("line", "text"),
    [
        (b"a FETCH 1,0 FLAGS", b"a BAD invalid sequence set"),
        (b"a FETCH 1: FLAGS", b"a BAD expected a space"),
        (b"a FETCH 4294967296 FLAGS", b"a BAD invalid sequence set"),
        (b"a FETCH 1 BODY[HEADER.FIELDS]", b"a BAD expected a space"),
        (b"a FETCH 1 BODY[MIME]", b"a BAD MIME needs a part number"),
        (b"a FETCH 1 BODY[0]", b"a BAD invalid section"),
        (b"a FETCH 1 BINARY[TEXT]", b"a BAD invalid binary section"),
        (b"a FETCH 1 BODY[]<1>", b"a BAD invalid partial"),
        (b"a SEARCH", b"a BAD expected a space"),
        (b"a SEARCH FROB", b"a BAD unknown search key FROB"),
        (b"a SEARCH FROM", b"a BAD missing argument"),
        (b"a SEARCH RETURN (PARTIAL) ALL", b"a BAD unknown RETURN option PARTIAL"),
        (b"a SEARCH " + b"(" * 60 + b"ALL" + b")" * 60, b"a BAD search keys nested too deep"),
        (
            b"a SEARCH LARGER 99999999999999999999999",
            b"a BAD number out of range: 99999999999999999999",
        ),
        (b"a STORE 1 +FLAGS (\\Seen", b"a BAD expected )"),
        (b"a UID FROB 1", b"a BAD unknown command"),
        (b"a UID", b"a BAD expected a space"),
        (b"a APPEND INBOX", b"a BAD APPEND needs a message"),
        (b'a APPEND INBOX "hello"', b"a BAD invalid date-time"),
        (b"a APPEND INBOX (\\Seen) x", b"a BAD expected a literal"),
        (b"a SELECT INBOX (FOO)", b"a BAD unknown SELECT parameter FOO"),
        (b"a ENABLE", b"a BAD ENABLE needs a capability"),
        (b"a STATUS INBOX ()", b"a BAD STATUS needs items"),
        (b'a LIST "" % RETURN', b"a BAD expected a space"),
    ],
)
def test_bad(line: bytes, text: bytes) -> None:
    assert bad(line) == text + b"\r\n"


def test_commands_without_tag_are_untagged_bad() -> None:
    assert bad(b"(a NOOP") == b"* BAD missing or invalid tag\r\n"


def test_mailbox_names_keep_every_byte() -> None:
    body = parse(b"a CREATE \xff\xfe", State.AUTHENTICATED).body
    assert isinstance(body, c.Create)
    assert body.mailbox.encode("utf-8", "surrogateescape") == b"\xff\xfe"
