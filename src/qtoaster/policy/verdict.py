"""What a check returns: pass, or reject with a reply; possibly a rewritten address.

Checks never write to the socket and never format wire bytes: they return a
:class:`Verdict` and the pipeline decides what the client hears (DESIGN.md section 5).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

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
