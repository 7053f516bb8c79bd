"""The metrics role's HTTP server: ``GET /metrics`` on the socket the supervisor bound.

uvicorn serves a Starlette app of one route, so HTTP parsing is a library's: ``/metrics``
answers GET (and HEAD), another method there 405, another path 404; the format is the
one the scraper's Accept header asks for (prometheus_client's choice).  Each scrape reads
every ``run/metrics/ROLE/*.db`` file and adds them up (prometheus_client's multiprocess
merge: counters summed over every process that ever ran since the server started, the
queue gauges the most recent value).

Invariants: runs as its own unprivileged user (it parses network input) and only reads
the files; a file that cannot be read (yet) is left out of that scrape, never an error.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Iterable
from pathlib import Path

import uvicorn
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

HEADER_BYTES = 8  # an mmap'ed file shorter than its header is still being created


class RoleFiles(Collector):
    """A collector over every role's directory under ``root`` (run/metrics/)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def files(self) -> list[str]:
        found: list[str] = []
        try:
            roles = sorted(os.scandir(self.root), key=lambda e: e.name)
        except OSError:
            return found
        for role in roles:
            try:
                entries = list(os.scandir(role.path))
            except OSError:
                continue
            for entry in entries:
                if not entry.name.endswith(".db"):
                    continue
                try:
                    big_enough = entry.stat().st_size >= HEADER_BYTES
                except OSError:
                    continue
                if big_enough and os.access(entry.path, os.R_OK):
                    found.append(entry.path)
        return sorted(found)

    def collect(self) -> Iterable[Metric]:
        merged: Iterable[Metric] = MultiProcessCollector.merge(  # type: ignore[no-untyped-call]
            self.files(), accumulate=True
        )
        return merged


def make_app(root: Path) -> Starlette:
    registry = CollectorRegistry()
    registry.register(RoleFiles(root))

    async def metrics(request: Request) -> Response:
        # prometheus_client's own negotiation: OpenMetrics when the scraper asks for it,
        # else the text format 0.0.4 that every Prometheus reads.
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        body = await run_in_threadpool(encoder, registry)
        return Response(body, headers={"Content-Type": content_type})

    return Starlette(routes=[Route("/metrics", metrics, methods=["GET"])])


async def serve_metrics(root: Path, sock: socket.socket, ready: Callable[[], None]) -> None:
    """Serve until SIGTERM/SIGINT (uvicorn's own handlers: it stops gracefully)."""
    config = uvicorn.Config(
        make_app(root),
        lifespan="off",
        access_log=False,
        log_level="warning",
        proxy_headers=False,
        timeout_graceful_shutdown=2,  # an idle keep-alive client does not hold a stop up
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.01)  # uvicorn offers no readiness event
    if server.started:
        ready()
    await task
