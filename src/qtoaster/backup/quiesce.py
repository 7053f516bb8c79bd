"""Keep local deliveries still while a backup copies the queue and the Maildirs.

A message is then in exactly one of them (docs/backup.md, "Consistency"): with the queue
manager running, :func:`deliveries_paused` holds a pause request (queue/pause.py) and
waits until the manager says nothing is in flight; with none running, it takes the queue
manager's lock itself, so that none starts until the copy is done.

Invariant: whatever ends the backup (an error, a signal, kill -9), the request ends with
it: it is an flock the kernel drops with the process.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from qtoaster.backup.database import BackupError
from qtoaster.core.home import Home
from qtoaster.core.lock import QUEUE_MANAGER, HomeLock, Locked
from qtoaster.queue.pause import WORD, PauseRequest
from qtoaster.queue.store import QueueStore

POLL = 0.05  # seconds between looks at the manager's answer
RENOTIFY = 1.0  # the trigger word again this often (a manager restarted meanwhile)


@contextmanager
def deliveries_paused(home: Home, timeout: float) -> Iterator[str]:
    """Inside: no delivery changes the queue or a Maildir. Yields how that was obtained."""
    lock = HomeLock(home.run_dir, QUEUE_MANAGER)
    try:
        lock.acquire("the queue manager")
    except Locked:
        pass
    else:
        try:
            yield "no queue manager was running; its lock is held during the copy"
        finally:
            lock.release()
        return
    request = PauseRequest(home.run_dir, home.queue)
    try:
        request.hold()
    except RuntimeError as exc:
        raise BackupError(str(exc)) from None
    store = QueueStore(home.queue)
    try:
        _wait_honoured(request, store, timeout)
        yield "the queue manager paused deliveries"
    finally:
        request.release()
        store.notify(WORD)


def _wait_honoured(request: PauseRequest, store: QueueStore, timeout: float) -> None:
    start = time.monotonic()
    said = start - RENOTIFY
    while not request.honoured():
        now = time.monotonic()
        if now - start > timeout:
            raise BackupError(
                f"the queue manager did not pause deliveries within {timeout:.0f} s"
                " (deliveries in flight, e.g. a slow remote dialog: try again or give a"
                " longer --pause-timeout); nothing was copied"
            )
        if now - said >= RENOTIFY:
            store.notify(WORD)
            said = now
        time.sleep(POLL)
