"""What a check returns: pass, or reject with a reply; possibly a rewritten address.

Checks never write to the socket and never format wire bytes: they return a
:class:`Verdict` and the pipeline decides what the client hears (DESIGN.md section 5).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from qtoaster.core.reply import Reply


class Stage(enum.Enum):
    CONNECT = "connect"
    HELO = "helo"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"


@dataclass(frozen=True, slots=True)
class Verdict:
    reply: Reply | None = None  # None: the check lets the command through
    rewritten: str | None = None  # a replacement address (RELAYCLIENT suffix, localiphost)
    delay: float = 0.0  # seconds the session waits before it answers (chkuser, tarpit)

    @property
    def rejects(self) -> bool:
        return self.reply is not None


PASS = Verdict()


@dataclass(frozen=True, slots=True)
class Facts:
    """What a check may look at: the connection, the transaction, the command."""

    remote_ip: str
    local_ip: str
    env: Mapping[str, str]
    helo: str | None = None
    sender: str | None = None
    recipient: str | None = None
    size: int | None = None
    recipients: tuple[str, ...] = field(default_factory=tuple)
    # Per-session scratch space of checks that count across commands (chkuser's recipient
    # counters, spec 12.4), keyed by check name; the session owns it, checks mutate it.
    session: MutableMapping[str, Any] = field(default_factory=dict)
