"""Assemble and run the send role: queue store, local agent, the remote delivery process's
client (``send/remoteclient.py``), queue manager.

``qtoaster serve send`` (and the supervisor's child) calls :func:`serve_send`; it reads
the configuration it is given and nothing else.  Invariant: the directory is opened
lazily, so a database outage defers local deliveries instead of stopping the role.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from qtoaster.auth.client import srs_service
from qtoaster.config.loader import Config
from qtoaster.core.clock import SystemClock
from qtoaster.delivery.local import LocalAgent
from qtoaster.directory.lazy import LazyDirectory
from qtoaster.mailauth.dnsquery import Lookup
from qtoaster.metrics import definitions as metrics
from qtoaster.queue.pause import PauseWatch
from qtoaster.queue.store import QueueStore
from qtoaster.send.manager import QueueManager
from qtoaster.send.remoteclient import RemoteClient
from qtoaster.send.signing import OutboundSigner

log = logging.getLogger("qtoaster.send")


async def serve_send(
    config: Config, ready: Callable[[], None], remote: RemoteClient | None = None
) -> None:
    """Deliver from the queue until SIGTERM or SIGINT; *ready* once the manager runs.

    ``remote``: a client whose child was started as root (RemoteClient.start_now); when
    that child dies the role stops, so that its supervisor starts both again."""

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    # Opened on first use and again after an outage: deliveries defer meanwhile.
    directory = LazyDirectory(config.home, config.settings.database_url)
    fsync = config.settings.fsync
    store = QueueStore(config.home.queue, fsync=fsync)
    # Forwards' senders are rewritten, SRS bounces sent on: by the auth role under root.
    srs = srs_service(config.home, config.settings.srs.max_age_days)
    agent = LocalAgent(
        config.home,
        config.controls,
        directory,
        fsync=fsync,
        queue=store,
        srs=srs,
        srs_settings=config.settings.srs,
    )
    # Remote deliveries run in a child process this role starts, restarts and stops.
    if remote is None:
        remote = RemoteClient(config.home.root)

    def gone() -> None:
        if not stop.is_set():
            log.warning(
                "send the remote delivery process is gone; stopping so that the "
                "supervisor starts send and it again"
            )
            stop.set()

    remote.on_gone = gone
    dsn = config.settings.bounce_format == "dsn"
    clock = SystemClock()
    # DKIM keys are read once here: a SIGHUP to qtoaster run restarts this role.
    dkim = config.settings.dkim
    lookup = Lookup.build(config.settings.dns_nameservers, config.settings.mailauth.timeout)
    signer = OutboundSigner.load(
        config.home.root,
        clock,
        sign=dkim.sign,
        expiry=dkim.expiry,
        authserv_id=config.controls.me,
        dnsfunc=lookup.dkim_txt,
    )
    pause = PauseWatch(config.home.run_dir, config.home.queue)  # docs/backup.md
    manager = QueueManager(
        store,
        config,
        agent,
        clock,
        remote,
        dsn=dsn,
        delay_warning=config.settings.send_delay_warning,
        signer=signer,
        pause=pause,
    )
    task = loop.create_task(manager.run(stop))
    gauges = loop.create_task(queue_gauges(manager))
    ready()
    try:
        await task
    finally:
        gauges.cancel()
    directory.close()


async def queue_gauges(manager: QueueManager, every: float = 1.0) -> None:
    """The queue's size and its oldest message's age for the metrics, once the manager has
    scanned the queue and then every ``every`` seconds (docs/metrics.md)."""
    await manager.ready.wait()
    while True:
        jobs = manager.jobs.values()
        metrics.queue(len(jobs), min((job.message.birth for job in jobs), default=None))
        await asyncio.sleep(every)
