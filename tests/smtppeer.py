"""A configurable fake SMTP server for integration tests: the other end of remote delivery.

Deliberately independent of qtoaster's SMTP engine (a bug shared by both ends would pass
every test) and deliberately small: one coroutine per connection reading lines from its
own buffer, so pipelined commands (RFC 2920) are answered one by one, in order.

Invariants: the peer runs in its own thread with its own event loop, so sync tests and
async tests (whose loop would otherwise be blocked by a waiting test) can both use it; it
listens on the given loopback address only; `SmtpPeer.messages` holds each message whose
final reply was 2xx, in arrival order; `SmtpPeer.wait_for` waits on a condition variable,
never by sleeping.  BDAT (RFC 3030) is served when ``CHUNKING`` is among the extensions
offered (add ``BINARYMIME`` to offer that too): the chunks of a transaction are joined, and
``BDAT <n> LAST`` gets ``final_reply``.  Replies given in `PeerBehaviour` are sent as they
are: put ``\\n`` between the lines of a multi-line reply (``"451-one\\n451 two"``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

_MAX_LINE = 1 << 20


@dataclass
class PeerBehaviour:
    greeting: str = "220 peer.test ESMTP"  # e.g. "421 busy", "554 go away"
    extensions: tuple[str, ...] = ("PIPELINING", "SIZE 10485760", "8BITMIME")
    tls: ssl.SSLContext | None = None  # offers STARTTLS when set
    mail_reply: str = "250 ok"
    rcpt_replies: dict[str, str] = field(default_factory=dict)  # address -> reply
    data_reply: str = "354 go ahead"
    final_reply: str = "250 ok queued"
    drop_mid_data: bool = False  # close the connection after the first body bytes


@dataclass(frozen=True)
class ReceivedMessage:
    sender: str
    recipients: tuple[str, ...]
    data: bytes  # dot-stuffing undone, CRLF kept, without the final ".\r\n"; BDAT: the octets
    tls: bool
    client_cert: dict[str, Any] | None  # getpeercert() of the client under TLS
    helo: str
    bdat: bool = False  # it came by BDAT, not DATA


class _Closed(Exception):
    """The client went away (EOF) or the peer hung up on purpose."""


def _address(argument: str) -> str:
    """The address inside ``<...>`` of a MAIL FROM:/RCPT TO: argument (params ignored)."""
    start, end = argument.find("<"), argument.find(">")
    if start == -1 or end < start:
        return argument.split(" ", 1)[0]
    return argument[start + 1 : end]


class _Connection:
    """One SMTP session: state is helo, sender and recipients, and whether TLS is on."""

    def __init__(
        self, peer: SmtpPeer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.peer, self.reader, self.writer = peer, reader, writer
        self.behaviour = peer.behaviour
        self.buffer = bytearray()
        self.helo = ""
        self.tls = False
        self.sender: str | None = None
        self.recipients: list[str] = []
        self.chunks = bytearray()  # BDAT octets of the transaction so far

    async def line(self) -> bytes:
        while (end := self.buffer.find(b"\n")) == -1:
            if len(self.buffer) > _MAX_LINE:
                raise _Closed
            chunk = await self.reader.read(65536)
            if not chunk:
                raise _Closed
            self.buffer += chunk
        line = bytes(self.buffer[: end + 1])
        del self.buffer[: end + 1]
        return line

    async def reply(self, text: str) -> None:
        self.writer.write("".join(f"{line}\r\n" for line in text.split("\n")).encode())
        await self.writer.drain()

    def reset(self) -> None:
        self.sender, self.recipients = None, []
        self.chunks = bytearray()

    async def octets(self, count: int) -> bytes:
        while len(self.buffer) < count:
            chunk = await self.reader.read(65536)
            if not chunk:
                raise _Closed
            self.buffer += chunk
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        return data

    async def run(self) -> None:
        await self.reply(self.behaviour.greeting)
        if self.behaviour.greeting.startswith("421"):
            return
        refused = not self.behaviour.greeting.startswith("2")
        while True:
            command = (await self.line()).decode("utf-8", "surrogateescape").rstrip("\r\n")
            self.peer.transcript.append(command)
            verb, _, argument = command.partition(" ")
            verb = verb.upper()
            if verb == "QUIT":
                await self.reply("221 peer.test bye")
                return
            if refused:  # RFC 5321 3.1: after a 554 greeting, only QUIT is served
                await self.reply("503 5.5.1 no service here")
                continue
            await self.command(verb, argument)

    async def command(self, verb: str, argument: str) -> None:
        if verb == "EHLO":
            await self.ehlo(argument)
        elif verb == "HELO":
            self.helo = argument
            self.reset()
            await self.reply("250 peer.test")
        elif verb == "STARTTLS":
            await self.starttls()
        elif verb == "MAIL":
            await self.mail(argument)
        elif verb == "RCPT":
            await self.rcpt(argument)
        elif verb == "DATA":
            await self.data()
        elif verb == "BDAT":
            await self.bdat(argument)
        elif verb == "RSET":
            self.reset()
            await self.reply("250 ok")
        elif verb == "NOOP":
            await self.reply("250 ok")
        else:
            await self.reply("502 5.5.2 unimplemented")

    async def ehlo(self, argument: str) -> None:
        self.helo = argument
        self.reset()
        lines = ["peer.test", *self.behaviour.extensions]
        if self.behaviour.tls is not None and not self.tls:
            lines.append("STARTTLS")
        text = [f"250-{x}" for x in lines[:-1]] + [f"250 {lines[-1]}"]
        await self.reply("\n".join(text))

    async def starttls(self) -> None:
        if self.behaviour.tls is None or self.tls:
            await self.reply("502 5.5.1 STARTTLS not offered")
            return
        await self.reply("220 ready to start TLS")
        if self.buffer:  # RFC 3207 4: pipelined clear text after STARTTLS is discarded
            self.peer.injected.append(bytes(self.buffer))
            self.buffer.clear()
        await self.writer.start_tls(self.behaviour.tls)
        # RFC 3207 4.2: forget everything learned in clear text, EHLO included.
        self.tls, self.helo = True, ""
        self.reset()

    async def mail(self, argument: str) -> None:
        if not self.helo:
            await self.reply("503 5.5.1 EHLO first")
        elif self.sender is not None:
            await self.reply("503 5.5.1 nested MAIL command")
        else:
            reply = self.behaviour.mail_reply
            if reply.startswith("2"):
                self.sender = _address(argument)
            await self.reply(reply)

    async def rcpt(self, argument: str) -> None:
        if self.sender is None:
            await self.reply("503 5.5.1 MAIL first")
            return
        address = _address(argument)
        reply = self.behaviour.rcpt_replies.get(address, "250 ok")
        if reply.startswith("2"):
            self.recipients.append(address)
        await self.reply(reply)

    async def data(self) -> None:
        if self.sender is None or not self.recipients:
            await self.reply("554 5.5.1 no valid recipients")
            return
        await self.reply(self.behaviour.data_reply)
        if not self.behaviour.data_reply.startswith("3"):
            return
        if self.behaviour.drop_mid_data:
            if not self.buffer:
                self.buffer += await self.reader.read(65536)
            self.writer.transport.abort()  # a hard drop, as a crashed server would
            raise _Closed
        body = bytearray()
        while (line := await self.line()) != b".\r\n":
            body += line[1:] if line.startswith(b".") else line  # RFC 5321 4.5.2
        reply = self.behaviour.final_reply
        if reply.startswith("2"):
            self.peer.record(self.message(bytes(body)))
        self.reset()
        await self.reply(reply)

    async def bdat(self, argument: str) -> None:
        """RFC 3030 2: ``BDAT <size> [LAST]``, then exactly *size* octets."""
        words = argument.split()
        last = len(words) == 2 and words[1].upper() == "LAST"
        if not words or not words[0].isdigit() or len(words) > 1 + last:
            await self.reply("501 5.5.4 syntax: BDAT <size> [LAST]")
            raise _Closed  # the end of the chunk is unknown: the stream is out of step
        data = await self.octets(int(words[0]))
        if "CHUNKING" not in self.behaviour.extensions:
            await self.reply("502 5.5.2 unimplemented")
        elif self.sender is None or not self.recipients:
            self.chunks = bytearray()
            await self.reply("554 5.5.1 no valid recipients")
        elif not last:
            self.chunks += data
            await self.reply(f"250 2.0.0 {len(data)} octets received")
        else:
            reply = self.behaviour.final_reply
            if reply.startswith("2"):
                self.peer.record(self.message(bytes(self.chunks + data), bdat=True))
            self.reset()
            await self.reply(reply)

    def message(self, body: bytes, bdat: bool = False) -> ReceivedMessage:
        assert self.sender is not None
        cert = None
        if self.tls:
            ssl_object = self.writer.get_extra_info("ssl_object")
            cert = ssl_object.getpeercert() if ssl_object is not None else None
        recipients = tuple(self.recipients)
        return ReceivedMessage(self.sender, recipients, body, self.tls, cert, self.helo, bdat)


class SmtpPeer:
    """A fake SMTP server on *host* (127.0.0.x or ::1); port 0 picks a free port."""

    def __init__(self, host: str, port: int = 0, behaviour: PeerBehaviour | None = None) -> None:
        self.host = host
        self.port = port
        self.behaviour = behaviour if behaviour is not None else PeerBehaviour()
        self.messages: list[ReceivedMessage] = []
        self.transcript: list[str] = []  # every command line received, without CRLF
        self.injected: list[bytes] = []  # clear text that followed STARTTLS (discarded)
        self.connections = 0
        self._arrived = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> SmtpPeer:
        loop = asyncio.new_event_loop()
        self._server = loop.run_until_complete(
            asyncio.start_server(self._serve, self.host, self.port)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="smtppeer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        loop = self._loop
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout=10)
        loop.close()
        self._loop = self._thread = None

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        # Hang up rather than cancel: the sessions end as on any EOF.  (Cancelling makes
        # 3.11's StreamReaderProtocol log the CancelledError as an unhandled exception.)
        for writer in list(self._writers):
            writer.transport.abort()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=10)
        await self._server.wait_closed()

    def __enter__(self) -> SmtpPeer:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- results -----------------------------------------------------------------------

    def record(self, message: ReceivedMessage) -> None:
        with self._arrived:
            self.messages.append(message)
            self._arrived.notify_all()

    def wait_for(self, n: int, timeout: float) -> list[ReceivedMessage]:
        """The first *n* messages, waiting up to *timeout* seconds; TimeoutError if fewer."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.messages) >= n, timeout):
                raise TimeoutError(f"{len(self.messages)} of {n} messages after {timeout} s")
            return list(self.messages[:n])

    async def wait_for_async(self, n: int, timeout: float) -> list[ReceivedMessage]:
        """`wait_for` for async tests, without blocking their event loop."""
        return await asyncio.to_thread(self.wait_for, n, timeout)

    # -- connections -------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        try:
            await _Connection(self, reader, writer).run()
        except (_Closed, OSError):  # EOF, reset, failed TLS handshake (SSLError)
            pass
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
