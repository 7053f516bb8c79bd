"""A small asyncio IMAP client for the benchmark: tagged commands, pipelining, literals.

Only what the loads need: send a command (several may be in flight: each gets its own tag),
read responses up to a tag's completion, collect the untagged responses in between with
their literals inlined. A response is kept as ``Response(line, literals)``: ``line`` is the
response text with each literal replaced by ``{N}`` and ``literals`` the literal payloads in
order, so a FETCH of BODY.PEEK[] yields its body bytes without copying the line around.

Invariants: every read has a timeout (IO_TIMEOUT); a tagged NO/BAD raises ImapError unless
the caller asks for the status; responses are consumed strictly in order, as a server sends
them, so pipelined commands complete in the order they were sent.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from dataclasses import dataclass, field

IO_TIMEOUT = 120.0
_LITERAL = re.compile(rb"\{(\d+)\}\r\n$")


class ImapError(RuntimeError):
    pass


@dataclass
class Response:
    line: bytes  # without CRLF; literals shown as {N}
    literals: list[bytes] = field(default_factory=list)


@dataclass
class Done:
    tag: bytes
    status: bytes  # OK, NO, BAD
    text: bytes
    untagged: list[Response]


class ImapClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.serial = 0
        self.greeting = b""
        self.pending: list[Response] = []  # untagged responses not yet given to a caller

    @classmethod
    async def connect(cls, host: str, port: int, tls: ssl.SSLContext | None = None) -> ImapClient:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=tls, limit=1 << 20), IO_TIMEOUT
        )
        client = cls(reader, writer)
        greeting = await client.read_response()
        if not greeting.line.startswith(b"* OK"):
            raise ImapError(f"greeting: {greeting.line[:200]!r}")
        client.greeting = greeting.line
        return client

    async def read_response(self) -> Response:
        line = await asyncio.wait_for(self.reader.readuntil(b"\r\n"), IO_TIMEOUT)
        response = Response(b"")
        parts = []
        while (match := _LITERAL.search(line)) is not None:
            parts.append(line[:-2])
            response.literals.append(
                await asyncio.wait_for(self.reader.readexactly(int(match[1])), IO_TIMEOUT)
            )
            line = await asyncio.wait_for(self.reader.readuntil(b"\r\n"), IO_TIMEOUT)
        parts.append(line[:-2])
        response.line = b"".join(parts)
        return response

    def send(self, text: str | bytes) -> bytes:
        """Queue one command (no literal), return its tag; nothing is read."""
        self.serial += 1
        tag = b"a%d" % self.serial
        data = text.encode() if isinstance(text, str) else text
        self.writer.write(tag + b" " + data + b"\r\n")
        return tag

    async def wait(self, tag: bytes, check: bool = True) -> Done:
        """Read until ``tag`` completes; the untagged responses read on the way are returned
        (those of earlier pipelined commands too, in order)."""
        await self.writer.drain()
        while True:
            response = await self.read_response()
            if response.line.startswith(b"* ") or response.line.startswith(b"+"):
                self.pending.append(response)
                continue
            got, _, rest = response.line.partition(b" ")
            status, _, text = rest.partition(b" ")
            if got != tag:
                if status != b"OK" and check:
                    raise ImapError(f"{got!r} {status!r} {text[:200]!r}")
                continue
            untagged, self.pending = self.pending, []
            if status != b"OK" and check:
                raise ImapError(f"{tag!r} {status!r} {text[:200]!r}")
            return Done(tag, status, text, untagged)

    async def command(self, text: str | bytes, check: bool = True) -> Done:
        return await self.wait(self.send(text), check)

    async def login(self, user: str, password: str) -> None:
        await self.command(f'LOGIN "{user}" "{password}"')

    async def idle(self) -> None:
        """Send IDLE and wait for its continuation; the command stays open."""
        self.serial += 1
        self.idle_tag = b"a%d" % self.serial
        self.writer.write(self.idle_tag + b" IDLE\r\n")
        await self.writer.drain()
        while True:
            response = await self.read_response()
            if response.line.startswith(b"+"):
                return
            if not response.line.startswith(b"* "):
                raise ImapError(f"IDLE: {response.line[:200]!r}")

    async def logout(self) -> None:
        try:
            await self.command("LOGOUT", check=False)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        self.close()

    def close(self) -> None:
        self.writer.close()


def fetch_literals(responses: list[Response]) -> list[bytes]:
    """Every literal of the FETCH responses, in order (one per message for BODY.PEEK[])."""
    return [lit for r in responses if b" FETCH " in r.line for lit in r.literals]


def select_value(responses: list[Response], name: bytes) -> int:
    """A number from SELECT's responses: ``EXISTS`` or an OK code (UIDVALIDITY, HIGHESTMODSEQ)."""
    for r in responses:
        words = r.line.split()
        if name == b"EXISTS" and len(words) == 3 and words[2] == b"EXISTS":
            return int(words[1])
        code = re.search(rb"\[" + name + rb" (\d+)\]", r.line)
        if code:
            return int(code[1])
    raise ImapError(f"no {name!r} in the SELECT responses")
