"""httpd/timing.py: one Server-Timing header on every HTTP response, none overwritten."""

from __future__ import annotations

import asyncio
import re

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from qtoaster.httpd.timing import ServerTiming


async def plain(request: Request) -> Response:
    return JSONResponse({"ok": True})


async def own(request: Request) -> Response:
    return JSONResponse({}, headers={"Server-Timing": "db;dur=1"})


APP = ServerTiming(Starlette(routes=[Route("/plain", plain), Route("/own", own)]))


def get(path: str) -> httpx.Response:
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=APP)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await c.get(path)

    return asyncio.run(run())


def test_header_added_once() -> None:
    r = get("/plain")
    assert r.json() == {"ok": True}
    assert re.fullmatch(r"app;dur=\d+\.\d", r.headers["server-timing"])
    assert len(r.headers.get_list("server-timing")) == 1
    assert re.fullmatch(r"app;dur=\d+\.\d", get("/missing").headers["server-timing"])


def test_own_header_kept() -> None:
    assert get("/own").headers.get_list("server-timing") == ["db;dur=1"]
