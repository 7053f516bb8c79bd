"""A ``Server-Timing: app;dur=MS`` header on every HTTP response of the http role: the
milliseconds from the request's arrival in the application to the start of its response
(routing, login check, the executor's work, rendering), without TLS and network time.
bench/http.py reads it for the list bars of issue 17; browsers show it in their tools.

Invariants: the header is added once, to the response's start only; a response that
already names ``server-timing`` keeps its own.
"""

from __future__ import annotations

import time
from typing import Any

Scope = dict[str, Any]
Receive = Any
Send = Any
App = Any


class ServerTiming:
    """ASGI middleware: wraps ``app``; other scopes (lifespan, websocket) pass through."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def timed_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"server-timing" for name, _ in headers):
                    ms = (time.perf_counter() - started) * 1000
                    headers.append((b"server-timing", f"app;dur={ms:.1f}".encode()))
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, timed_send)
