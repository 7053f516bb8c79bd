"""sd_notify(3) without libsystemd: the supervisor's state, told to systemd.

systemd (``Type=notify``) gives the service ``$NOTIFY_SOCKET``, a Unix datagram socket: a
path, or an abstract name written with a leading ``@``.  One datagram of ``KEY=VALUE``
lines is one message: ``READY=1`` once every role is ready, ``RELOADING=1`` (with
``MONOTONIC_USEC``, which systemd 253 asks for) then ``READY=1`` around a SIGHUP reload,
``STOPPING=1`` at shutdown.

Invariants: without ``$NOTIFY_SOCKET`` (not under systemd) every call does nothing; a
failed send is logged once and never raised (the server runs on without systemd's view
of it); :meth:`Notifier.from_environment` removes the variable so that no role, and no
program a delivery starts, inherits it and speaks for the service.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import MutableMapping

log = logging.getLogger("qtoaster.supervisor")
VARIABLE = "NOTIFY_SOCKET"


def socket_address(value: str) -> str | None:
    """The ``AF_UNIX`` address ``$NOTIFY_SOCKET`` names, None for one we cannot use (empty,
    relative, or another family such as ``vsock:``)."""
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]  # an abstract name
    if value.startswith("/"):
        return value
    return None


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock systemd compares MONOTONIC_USEC with."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    def __init__(self, address: str | None) -> None:
        self.address = address
        self._failed = False

    @classmethod
    def from_environment(
        cls, environ: MutableMapping[str, str] | None = None, *, unset: bool = True
    ) -> Notifier:
        env = os.environ if environ is None else environ
        value = env.pop(VARIABLE, "") if unset else env.get(VARIABLE, "")
        address = socket_address(value) if value else None
        if value and address is None:
            log.warning(
                "supervisor %s=%r is not a Unix socket: not telling systemd our state",
                VARIABLE,
                value,
            )
        return cls(address)

    def send(self, *fields: str) -> bool:
        """One message of ``fields`` (``KEY=VALUE`` each); True if it was sent."""
        if self.address is None:
            return False
        message = "\n".join(fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, self.address)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.warning(
                    "supervisor cannot tell systemd %s: %s", fields[0] if fields else "", exc
                )
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        return self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")
