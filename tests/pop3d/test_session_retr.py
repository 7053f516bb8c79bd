"""Pop3Session's RETR: pipelined answers, the one-read fast path, streaming, errors.

The session is driven without a socket: a recording transport, the engine moved to
TRANSACTION by hand, a real Maildir.  What the client receives must be the RFC 1939 wire
form of each message whichever path (one read, or streamed in chunks) served it.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any, cast

import pytest

from qtoaster.maildir.mailbox import Mailbox
from qtoaster.pop3d.session import CHUNK, Pop3Session

T0 = 1_700_000_000
SMALL = b"Subject: s\n\n.dot line\nbody\n"
BIG = b"".join(b".%06d line of a big message\n" % i for i in range(3 * CHUNK // 25))


class Transport:
    """Just what the session uses of an asyncio transport."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def wire(message: bytes) -> bytes:
    """RFC 1939 3: CRLF line ends, a dot doubled at a line start, then ".CRLF"."""
    lines = message.split(b"\n")[:-1]
    return b"".join((b"." + ln if ln.startswith(b".") else ln) + b"\r\n" for ln in lines) + b".\r\n"


@pytest.fixture
def session(tmp_path: Path) -> tuple[Pop3Session, Transport]:
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    for n, body in enumerate([SMALL, BIG, SMALL + b"x\n"], start=1):
        path = maildir / "new" / f"{T0 + n}.M1P1Q{n}.host"
        path.write_bytes(body)
        os.utime(path, (T0 + n, T0 + n))
    pop = Pop3Session(cast(Any, None), set(), "pop3")
    transport = Transport()
    pop.transport = cast(Any, transport)
    pop.conn.receive_data(b"USER u\r\nPASS p\r\n")
    pop.conn.next_event()
    pop.conn.ok()
    pop.conn.next_event()
    pop.conn.logged_in()
    pop.conn.data_to_send()
    pop.mailbox = Mailbox.open(maildir)
    return pop, transport


async def settle(pop: Pop3Session) -> None:
    while pop.busy:
        await asyncio.sleep(0)


async def test_pipelined_small_messages_leave_in_one_write(
    session: tuple[Pop3Session, Transport],
) -> None:
    pop, transport = session
    pop.data_received(b"RETR 1\r\nRETR 3\r\nRETR 1\r\n")
    assert not pop.busy  # no task for a message that fits in one read
    expected = [b"+OK \r\n" + wire(m) for m in (SMALL, SMALL + b"x\n", SMALL)]
    assert transport.writes == [b"".join(expected)]


async def test_big_message_is_streamed_between_small_ones(
    session: tuple[Pop3Session, Transport],
) -> None:
    pop, transport = session
    pop.data_received(b"RETR 1\r\nRETR 2\r\nRETR 3\r\n")
    await settle(pop)
    expected = [b"+OK \r\n" + wire(m) for m in (SMALL, BIG, SMALL + b"x\n")]
    assert b"".join(transport.writes) == b"".join(expected)
    assert len(transport.writes) > 3  # the big one went out chunk by chunk


async def test_errors_keep_qmail_texts(session: tuple[Pop3Session, Transport]) -> None:
    pop, transport = session
    assert pop.mailbox is not None
    (pop.mailbox.maildir / pop.mailbox.get(3).name).unlink()
    pop.data_received(b"DELE 1\r\nRETR 1\r\nRETR 9\r\nRETR 0\r\nRETR 3\r\n")
    assert b"".join(transport.writes) == (
        b"+OK \r\n-ERR already deleted\r\n-ERR not that many messages\r\n"
        b"-ERR messages are counted from 1\r\n-ERR unable to open that message\r\n"
    )
