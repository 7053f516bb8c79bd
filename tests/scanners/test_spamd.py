"""scanners.spamd against a real spamd (Debian's, shipped rules, GTUBE) and fake peers."""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

import pytest
from tests.clamdserver import free_port
from tests.spamdserver import GTUBE, SpamdServer

from qtoaster.scanners import ScannerUnavailable
from qtoaster.scanners.spamd import (
    SpamdResult,
    SpamdTooBig,
    build_request,
    parse_response,
    spam_headers,
    spamd_check,
)

QUEUE_HEADER = b"qtoaster-queue-header " + GTUBE.encode() + b"\n"  # skipped by offset


@pytest.fixture(scope="module")
def spamd() -> Iterator[SpamdServer]:
    with SpamdServer() as server:
        yield server


def _message(body: str) -> bytes:
    """A well-formed message, so the shipped header rules stay quiet."""
    message = EmailMessage()
    message["Received"] = "from mx.example.org (mx.example.org [192.0.2.1]) by mx.example.com"
    message["From"] = "Alice Example <alice@example.org>"
    message["To"] = "Bob Example <bob@example.com>"
    message["Subject"] = "Minutes of Tuesday's meeting"
    message["Date"] = format_datetime(datetime.datetime.now().astimezone())
    message["Message-ID"] = make_msgid(domain="example.org")
    message.set_content(body)
    return message.as_bytes()


def _spool(tmp_path: Path, message: bytes) -> tuple[str, int]:
    path = tmp_path / "spool"
    path.write_bytes(QUEUE_HEADER + message)
    return str(path), len(QUEUE_HEADER)


HAM = "Hi Bob,\n\nthe minutes of Tuesday's meeting are below; see you next week.\n\nAlice\n"


async def test_gtube_is_spam(spamd: SpamdServer, tmp_path: Path) -> None:
    path, offset = _spool(tmp_path, _message(f"Hello\n{GTUBE}\n"))
    result = await spamd_check(spamd.address, path, offset, timeout=30)
    assert result.spam and result.score >= 1000 and result.threshold == 5.0
    assert "GTUBE" in result.symbols


async def test_ham_is_not_spam(spamd: SpamdServer, tmp_path: Path) -> None:
    path, offset = _spool(tmp_path, _message(HAM))
    result = await spamd_check(spamd.address, path, offset, timeout=30, user="bob")
    assert not result.spam and result.score < result.threshold
    assert "GTUBE" not in result.symbols


async def test_too_big_is_not_sent(tmp_path: Path) -> None:
    """Over max_bytes nothing is sent: no connection to the (down) spamd is even tried."""
    path, offset = _spool(tmp_path, _message("x" * 2000))
    with pytest.raises(SpamdTooBig) as caught:
        await spamd_check(f"127.0.0.1:{free_port()}", path, offset, timeout=5, max_bytes=1000)
    assert caught.value.limit == 1000 and caught.value.size > 2000


async def test_exactly_max_bytes_is_sent(spamd: SpamdServer, tmp_path: Path) -> None:
    message = _message(f"{GTUBE}\n")
    path, offset = _spool(tmp_path, message)
    result = await spamd_check(spamd.address, path, offset, timeout=30, max_bytes=len(message))
    assert result.spam


async def test_minimal_rules(tmp_path: Path) -> None:
    path, offset = _spool(tmp_path, _message(f"{GTUBE}\n"))
    with SpamdServer(rules="minimal", children=1) as small:
        result = await spamd_check(small.address, path, offset, timeout=30)
    assert result == SpamdResult(spam=True, score=1000.0, threshold=5.0, symbols=("GTUBE",))


async def test_spamd_down(tmp_path: Path) -> None:
    path, offset = _spool(tmp_path, _message(HAM))
    began = time.monotonic()
    with pytest.raises(ScannerUnavailable, match="cannot connect"):
        await spamd_check(f"127.0.0.1:{free_port()}", path, offset, timeout=10)
    assert time.monotonic() - began < 1


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def fake() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> str:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        return f"127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()


def _answers(response: bytes) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # the client half-closes after its request
        writer.write(response)
        await writer.drain()
        writer.close()

    return handler


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.Event().wait()


async def test_timeout(fake: Callable[[Handler], Awaitable[str]], tmp_path: Path) -> None:
    path, offset = _spool(tmp_path, _message(HAM))
    address = await fake(_silent)
    began = time.monotonic()
    with pytest.raises(ScannerUnavailable, match=r"no verdict within 0\.2s"):
        await spamd_check(address, path, offset, timeout=0.2)
    assert time.monotonic() - began < 1


@pytest.mark.parametrize(
    "response",
    [
        b"",
        b"SPAMD/1.0 76 Bad header line: (Content-length mismatch)\r\n\r\n",
        b"SPAMD/1.1 0 EX_OK\r\nContent-length: 5\r\n\r\n",  # no Spam header
        b"SPAMD/1.1 0 EX_OK\r\nContent-length: 50\r\nSpam: True ; 9.0 / 5.0\r\n\r\nA,B",
        b"HTTP/1.1 200 OK\r\n\r\n",
    ],
)
async def test_protocol_errors(
    fake: Callable[[Handler], Awaitable[str]], tmp_path: Path, response: bytes
) -> None:
    path, offset = _spool(tmp_path, _message(HAM))
    address = await fake(_answers(response))
    with pytest.raises(ScannerUnavailable):
        await spamd_check(address, path, offset, timeout=5)


def test_parse_response() -> None:
    answer = b"SPAMD/1.1 0 EX_OK\r\nContent-length: 17\r\nSpam: True ; 1004.2 / 5.0\r\n\r\n"
    result = parse_response(answer + b"GTUBE,MISSING_MID")
    assert result == SpamdResult(True, 1004.2, 5.0, ("GTUBE", "MISSING_MID"))
    ham = parse_response(b"SPAMD/1.1 0 EX_OK\r\nSpam: False ; -0.1 / 5.0\r\n\r\n")
    assert ham == SpamdResult(False, -0.1, 5.0, ())
    odd = parse_response(b"SPAMD/1.1 0 EX_OK\nSpam: yes ; 6 / 5\n\nA\r\nX-Evil: 1,B\n")
    assert odd.spam and odd.symbols == ("B",)  # a name with a line break is dropped


def test_build_request() -> None:
    assert build_request(b"Subject: x\n\nhi\n", "bob") == (
        b"SYMBOLS SPAMC/1.5\r\nContent-length: 15\r\nUser: bob\r\n\r\nSubject: x\n\nhi\n"
    )
    with pytest.raises(ValueError, match="spamd user"):
        build_request(b"", "bob\r\nX: y")


def test_spam_headers_golden() -> None:
    symbols: tuple[str, ...] = ("GTUBE", "MISSING_DATE", "MISSING_FROM", "MISSING_HEADERS")
    symbols += ("MISSING_MID", "NO_HEADERS_MESSAGE", "NO_RECEIVED", "NO_RELAYS", "TVD_SPACE_RATIO")
    text = spam_headers(SpamdResult(True, 1005.2, 5.0, symbols), "mx.example.com")
    assert text == (
        b"X-Spam-Checker-Version: SpamAssassin spamd on mx.example.com\n"
        b"X-Spam-Status: Yes, score=1005.2 required=5.0 tests=GTUBE,MISSING_DATE,\n"
        b"\tMISSING_FROM,MISSING_HEADERS,MISSING_MID,NO_HEADERS_MESSAGE,\n"
        b"\tNO_RECEIVED,NO_RELAYS,TVD_SPACE_RATIO\n"
        b"X-Spam-Score: 1005.2\n"
    )
    assert spam_headers(SpamdResult(False, 0.04, 5.0, ()), "h") == (
        b"X-Spam-Checker-Version: SpamAssassin spamd on h\n"
        b"X-Spam-Status: No, score=0.0 required=5.0 tests=none\n"
        b"X-Spam-Score: 0.0\n"
    )


@pytest.mark.parametrize("count", [1, 5, 20, 60])
def test_spam_headers_fold_under_78(count: int) -> None:
    symbols = tuple(f"RULE_{index}_{'X' * (index % 23)}" for index in range(count))
    text = spam_headers(SpamdResult(True, -12.5, 5.0, symbols), "mx.example.com").decode()
    for line in text.splitlines():
        assert len(line.expandtabs(8)) <= 78
        assert line.startswith(("X-Spam-", "\t")) and line.rstrip() == line
    status = text.split("X-Spam-Status: ")[1].split("\nX-Spam-Score")[0]
    unfolded = status.replace("\n\t", "")
    assert unfolded.endswith("tests=" + ",".join(symbols))


def test_spam_headers_rejects_bad_hostname() -> None:
    with pytest.raises(ValueError, match="hostname"):
        spam_headers(SpamdResult(False, 0.0, 5.0, ()), "mx\nX-Injected: 1")
