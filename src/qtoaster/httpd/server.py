"""The http role: uvicorn serving the API (api.py) and the web pages (webpages.py) over
HTTPS on the supervisor's socket.

HTTPS with ``control/servercert.pem`` (key and certificate in one file, as qmail's); plain
HTTP only when ``[http] plain = true`` and the listener is on loopback (settings refuse
anything else).  The executor (cli/adminops.py) is this role's child on ``channel``: if it
goes away the role stops, and the supervisor starts both again.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path

import uvicorn

from qtoaster.auth.client import AuthClient
from qtoaster.httpd.access import Sessions
from qtoaster.httpd.actions import Context
from qtoaster.httpd.api import make_app
from qtoaster.httpd.channel import AdminChannel
from qtoaster.httpd.timing import ServerTiming
from qtoaster.httpd.webpages import routes as page_routes

GRACE_SECONDS = 2
"""How long a stop waits for requests in flight before it closes the connections."""


async def serve_http(
    sock: socket.socket,
    channel: socket.socket,
    auth_socket: Path,
    certificate: Path | None,
    admins: tuple[str, ...],
    ready: Callable[[], None],
) -> None:
    """Serve until SIGTERM/SIGINT (uvicorn's handlers) or until the executor is gone."""
    admin = AdminChannel(channel)
    ctx = Context(admin, AuthClient(auth_socket), admins, Sessions())
    config = uvicorn.Config(
        ServerTiming(make_app(ctx, pages=page_routes(ctx))),
        lifespan="off",
        access_log=False,
        log_level="warning",
        proxy_headers=False,
        ssl_certfile=None if certificate is None else str(certificate),
        # A stop waits this long for open connections: an idle keep-alive TLS client that
        # never answers close_notify would hold it for asyncio's 30 s SSL shutdown timeout.
        timeout_graceful_shutdown=GRACE_SECONDS,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.01)  # uvicorn offers no readiness event
    if server.started:
        ready()
    gone = asyncio.create_task(admin.gone.wait())
    await asyncio.wait([task, gone], return_when=asyncio.FIRST_COMPLETED)
    if not task.done():
        server.should_exit = True
        await task
