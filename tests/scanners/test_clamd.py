"""scanners.clamd against a real clamd (Debian's, our EICAR database) and fake peers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from tests.clamdserver import EICAR, EICAR_FILE_NAME, EICAR_STRING_NAME, ClamdServer, free_port

from qtoaster.config.endpoints import parse_address
from qtoaster.scanners import ScannerUnavailable
from qtoaster.scanners.clamd import ClamdResult, clamd_scan, parse_reply

QUEUE_HEADER = b"qtoaster-queue-header\n" + EICAR + b"\n"  # skipped by offset: never scanned
NAMES = {f"{EICAR_FILE_NAME}.UNOFFICIAL", f"{EICAR_STRING_NAME}.UNOFFICIAL"}


@pytest.fixture(scope="module")
def clamd() -> Iterator[ClamdServer]:
    with ClamdServer() as server:
        yield server


def _message(body: str, attachment: bytes | None = None) -> bytes:
    message = EmailMessage()
    message["From"] = "sender@example.org"
    message["To"] = "rcpt@example.com"
    message["Subject"] = "scan me"
    message.set_content(body)
    if attachment is not None:
        message.add_attachment(
            attachment, maintype="application", subtype="octet-stream", filename="eicar.com"
        )
    return message.as_bytes()


def _spool(tmp_path: Path, message: bytes) -> tuple[str, int]:
    path = tmp_path / "spool"
    path.write_bytes(QUEUE_HEADER + message)
    return str(path), len(QUEUE_HEADER)


def test_database_loaded(clamd: ClamdServer) -> None:
    assert "Loaded 2 signatures." in clamd.log()  # the .hdb and the .ndb
    assert clamd.started_in < 10


async def test_clean_message(clamd: ClamdServer, tmp_path: Path) -> None:
    path, offset = _spool(tmp_path, _message("Hello, nothing to see here.\n"))
    result = await clamd_scan(clamd.tcp_address, path, offset, timeout=10)
    assert result == ClamdResult(infected=False, virus=None)


async def test_eicar_attachment(clamd: ClamdServer, tmp_path: Path) -> None:
    path, offset = _spool(tmp_path, _message("see attached\n", attachment=EICAR))
    result = await clamd_scan(clamd.tcp_address, path, offset, timeout=10)
    assert result.infected and result.virus in NAMES


async def test_eicar_inline_line(clamd: ClamdServer, tmp_path: Path) -> None:
    body = "first line\n" + EICAR.decode() + "\nlast line\n"
    path, offset = _spool(tmp_path, _message(body))
    result = await clamd_scan(clamd.unix_address, path, offset, timeout=10)
    assert result == ClamdResult(infected=True, virus=f"{EICAR_STRING_NAME}.UNOFFICIAL")


async def test_offset_skips_our_header(clamd: ClamdServer, tmp_path: Path) -> None:
    path, offset = _spool(tmp_path, b"just text\n")
    assert not (await clamd_scan(clamd.address, path, offset, timeout=10)).infected
    assert (await clamd_scan(clamd.address, path, 0, timeout=10)).infected


async def test_max_bytes_stops_sending(clamd: ClamdServer, tmp_path: Path) -> None:
    filler = b"x" * 200_000 + b"\n"  # several chunks before the virus
    path, offset = _spool(tmp_path, filler + EICAR + b"\n")
    cut = await clamd_scan(clamd.address, path, offset, timeout=10, max_bytes=len(filler))
    assert cut == ClamdResult(infected=False, virus=None)  # the rest went unscanned
    whole = await clamd_scan(clamd.address, path, offset, timeout=10, max_bytes=len(filler) + 68)
    assert whole.infected


async def test_parallel_scans(clamd: ClamdServer, tmp_path: Path) -> None:
    dirty, offset = _spool(tmp_path, _message("x\n", attachment=EICAR))
    results = await asyncio.gather(
        *(clamd_scan(clamd.address, dirty, offset, timeout=10) for _ in range(8))
    )
    assert all(result.infected for result in results)


async def test_clamd_error_is_unavailable(tmp_path: Path) -> None:
    """clamd's own size limit answers ERROR: unavailable, never clean.

    clamd closes at once after its ERROR; when that races with our last chunk the
    kernel may discard its answer (ECONNRESET), so either text can come back.
    """
    path, offset = _spool(tmp_path, b"y" * 4096)
    with (
        ClamdServer(tcp=False, stream_max_length="1K") as small,
        pytest.raises(ScannerUnavailable, match=r"INSTREAM size limit exceeded|connection lost"),
    ):
        await clamd_scan(small.address, path, offset, timeout=10)


async def test_clamd_down(tmp_path: Path) -> None:
    path, offset = _spool(tmp_path, b"text\n")
    began = time.monotonic()
    with pytest.raises(ScannerUnavailable, match="cannot connect"):
        await clamd_scan(f"127.0.0.1:{free_port()}", path, offset, timeout=10)
    with pytest.raises(ScannerUnavailable, match="cannot connect"):
        await clamd_scan(str(tmp_path / "no.sock"), path, offset, timeout=10)
    assert time.monotonic() - began < 1


async def test_spool_missing_is_oserror(clamd: ClamdServer, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await clamd_scan(clamd.address, str(tmp_path / "gone"), 0, timeout=10)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def fake() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Start fake clamd peers on 127.0.0.1; gives their addresses."""
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> str:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        return f"127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()  # takes everything, never answers
    await asyncio.Event().wait()


def _replies(line: bytes) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(len(b"zINSTREAM\0"))
        writer.write(line)
        await writer.drain()
        writer.close()

    return handler


async def test_timeout(fake: Callable[[Handler], Awaitable[str]], tmp_path: Path) -> None:
    path, offset = _spool(tmp_path, b"text\n")
    address = await fake(_silent)
    began = time.monotonic()
    with pytest.raises(ScannerUnavailable, match=r"no verdict within 0\.2s"):
        await clamd_scan(address, path, offset, timeout=0.2)
    assert time.monotonic() - began < 1


@pytest.mark.parametrize("line", [b"", b"hello\0", b"stream: OK", b"stream:  FOUND\0"])
async def test_protocol_errors(
    fake: Callable[[Handler], Awaitable[str]], tmp_path: Path, line: bytes
) -> None:
    path, offset = _spool(tmp_path, b"text\n")
    address = await fake(_replies(line))
    with pytest.raises(ScannerUnavailable):
        await clamd_scan(address, path, offset, timeout=5)


def test_parse_reply() -> None:
    assert parse_reply(b"stream: OK") == ClamdResult(False, None)
    assert parse_reply(b"stream: Win.Test.EICAR_HDB-1 FOUND") == ClamdResult(
        True, "Win.Test.EICAR_HDB-1"
    )
    assert parse_reply(b"stream: Bad\x01Name FOUND").virus == "Bad?Name"
    with pytest.raises(ScannerUnavailable, match="size limit exceeded"):
        parse_reply(b"INSTREAM size limit exceeded. ERROR")


@pytest.mark.parametrize(
    ("address", "parsed"),
    [
        ("127.0.0.1:3310", ("127.0.0.1", 3310)),
        ("localhost:783", ("localhost", 783)),
        ("[::1]:3310", ("::1", 3310)),
        ("/run/clamav/clamd.ctl", "/run/clamav/clamd.ctl"),
    ],
)
def test_parse_address(address: str, parsed: tuple[str, int] | str) -> None:
    assert parse_address(address) == parsed


@pytest.mark.parametrize("address", ["", "host", "host:", ":3310", "::1:3310", "h:0", "h:x"])
def test_parse_address_rejects(address: str) -> None:
    with pytest.raises(ValueError, match="scanner address"):
        parse_address(address)
