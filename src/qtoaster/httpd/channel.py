"""The http role's channel to its executor: one JSON object per line, each way.

The http role parses HTTP as its own user and may change nothing; what it asks for is done
by its executor (forked by the role before it drops root, cli/adminfork.py, so running as
root, with the CLI's own code: cli/adminops.py), over a socketpair only the
two of them hold (decision 0025).  Request ``{"op": NAME, "args": {...}}``; answer
``{"ok": RESULT}`` or ``{"error": TEXT, "status": HTTP_STATUS}``.

Invariants: one request at a time (the executor is one thread; an asyncio lock here);
an executor that is gone answers 503 to this request, and the role exits so that the
supervisor starts it, and so a new executor, again.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

from qtoaster.core.errors import QtoasterError

MAX_LINE = 16 * 1024 * 1024  # a queue list of a big queue


class OpError(QtoasterError):
    """An operation refused: ``status`` is the HTTP status the API answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def encode(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


class ExecutorGone(OpError):
    def __init__(self, detail: str) -> None:
        super().__init__(503, f"the http role's executor is unavailable: {detail}")


class AdminChannel:
    """The http role's end of the socketpair."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lock = asyncio.Lock()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.gone = asyncio.Event()

    async def call(self, op: str, **args: Any) -> Any:
        async with self.lock:
            if self.reader is None or self.writer is None:
                self.reader, self.writer = await asyncio.open_unix_connection(
                    sock=self.sock, limit=MAX_LINE
                )
            try:
                self.writer.write(encode({"op": op, "args": args}))
                await self.writer.drain()
                line = await self.reader.readline()
            except (OSError, ValueError) as exc:
                self.gone.set()
                raise ExecutorGone(str(exc)) from exc
            if not line:
                self.gone.set()
                raise ExecutorGone("the channel is closed")
        answer = json.loads(line)
        if "error" in answer:
            raise OpError(int(answer.get("status", 500)), str(answer["error"]))
        return answer["ok"]
