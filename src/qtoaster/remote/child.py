"""The remote delivery process: ``qtoaster serve remote --channel-fd N``, the send role's child.

It parses what remote SMTP servers answer, so it runs apart from the queue manager (and,
with privilege separation, as ``qtoaster-remote``, which can read neither the queue nor a
mailbox nor a secret: decision 0007).  The send role (``send/remoteclient.py``) starts it
with one end of a socketpair; each ``Deliver`` frame brings the queue file as an open
descriptor, and the :class:`RemoteAgent` (with its idle-connection cache, which lives here)
delivers it; the ``Answer`` goes back with the same id.  Requests run concurrently; the send
role bounds how many (concurrencyremote and the per-domain politeness stay there).

Invariants: every received descriptor is closed exactly once, when its delivery ends; an
agent that raises answers TEMPORARY for every recipient (never silence, never a bounce); at
the end of the channel (the send role closed it or died) or on SIGTERM the process stops
reading, lets deliveries in flight finish, QUITs its cached connections and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket

from qtoaster.config.loader import Config
from qtoaster.config.settings import DaneMode, OnOff
from qtoaster.core.outcome import Outcome, Result
from qtoaster.remote.agent import RemoteAgent, RemoteConfig, RoutesFile
from qtoaster.remote.body import Body
from qtoaster.remote.channel import Answer, Deliver, Message
from qtoaster.remote.dane import Dane
from qtoaster.remote.dns import Resolver
from qtoaster.remote.link import Link
from qtoaster.remote.mtasts import MtaSts
from qtoaster.remote.tlspolicy import TransportSecurity
from qtoaster.tls.client import ClientTls

log = logging.getLogger("qtoaster.remote")

INTERNAL = "Internal error in remote delivery: {exc}. (#4.3.0)"  # send/results.py's text


def remote_agent(config: Config) -> RemoteAgent:
    """The remote agent from control/ and [remote]/[dns] settings."""
    control = config.home.control
    settings = config.settings
    resolver = Resolver(
        settings.dns_nameservers,
        timeout=min(5.0, settings.dns_timeout),
        lifetime=settings.dns_timeout,
    )
    tls = ClientTls(control)
    return RemoteAgent(
        RemoteConfig.load(control, config.controls, settings.remote_port),
        resolver,
        RoutesFile(control / "smtproutes"),
        tls,
        transport_security(config, resolver, tls),
    )


def transport_security(config: Config, resolver: Resolver, tls: ClientTls) -> TransportSecurity:
    """MTA-STS and DANE as ``[remote]`` says (docs/remote.md "Transport security")."""
    settings = config.settings
    mtasts = None
    if settings.remote_mta_sts is OnOff.ON:
        mtasts = MtaSts(
            resolver.txt,
            resolver.addresses,
            config.home.run_dir / "remote" / "mta-sts",
            cafile=settings.remote_ca_file,
            port=settings.remote_mta_sts_port,
        )
    dane_on = settings.remote_dane is DaneMode.ON or (
        settings.remote_dane is DaneMode.AUTO and settings.remote_resolver_validates
    )
    dane = None
    if dane_on:
        dane = Dane(
            settings.dns_nameservers,
            timeout=min(5.0, settings.dns_timeout),
            lifetime=settings.dns_timeout,
        )
    return TransportSecurity(tls, mtasts, dane, settings.remote_ca_file)


async def serve_remote(config: Config, sock: socket.socket) -> None:
    """Answer the send role's requests on ``sock`` until it closes or SIGTERM."""
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, done.set)
    # Ctrl-C at a terminal reaches the whole process group: the send role decides when
    # this process ends, by closing the channel.
    loop.add_signal_handler(signal.SIGINT, lambda: None)
    agent = remote_agent(config)
    tasks: set[asyncio.Task[None]] = set()

    async def deliver(request: Deliver, fd: int) -> None:
        try:
            attempt = await agent.deliver(
                Body(fd, request.offset, request.size, request.head),
                request.sender,
                request.recipients,
                request.domain,
                request.requiretls,
                request.smtputf8,
                request.dsn,
                binarymime=request.binarymime,
            )
            answer = Answer(request.id, tuple(attempt.results), attempt.reached)
        except Exception as exc:  # a bug must not bounce mail: defer and say so
            log.exception("remote remote agent raised for request %d", request.id)
            temporary = Result(Outcome.TEMPORARY, INTERNAL.format(exc=exc))
            answer = Answer(request.id, (temporary,) * len(request.recipients), True)
        finally:
            os.close(fd)
        link.send(answer)

    def on_message(message: Message, fd: int | None) -> None:
        if not isinstance(message, Deliver) or fd is None:
            if fd is not None:
                os.close(fd)
            link.close("unexpected frame from the send role")
            return
        task = loop.create_task(deliver(message, fd))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def on_close(reason: str) -> None:
        if reason != "end of file":
            log.error("remote channel to the send role: %s", reason)
        done.set()

    link = Link(sock, on_message, on_close, accept_fds=True)
    try:
        await done.wait()
        if tasks:  # the send role is gone or going: its answers may still be read
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        with contextlib.suppress(Exception):
            await agent.close()
        link.close()
