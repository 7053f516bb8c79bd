"""The values the sans-IO SMTP client engine takes and hands back: a transaction, its result,
and the events its driver acts on.

The result follows qmail-remote's reports (spec 17.1): one letter per recipient (``r``
accepted, ``h`` permanent, ``s`` temporary) and one for the message (``K`` success, ``Z``
temporary, ``D`` permanent), each with qmail-remote's text.  A recipient the dialog never got
to (the sender was refused, a session failure) is reported ``r`` with an empty text: as in
qmail-rspawn, the message letter then decides its fate (:meth:`TransactionResult.outcomes`).

Events are immutable; the driver handles them in list order (a :class:`Send` before the
:class:`Closed` that follows it is written first).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from qtoaster.core.dsn import NO_DSN, EnvelopeDsn
from qtoaster.core.outcome import Outcome


class TlsMode(enum.Enum):
    NONE = "none"  # never STARTTLS (control/notlshosts/<host>)
    OPPORTUNISTIC = "opportunistic"  # STARTTLS when offered, clear text otherwise
    REQUIRED = "required"  # control/tlshosts/<host>.pem exists: no TLS, no delivery (17.5)


@dataclass(frozen=True, slots=True)
class Transaction:
    sender: str  # "" = null sender
    recipients: tuple[str, ...]
    size: int  # octets of the message as stored (LF line ends)
    eightbit: bool  # the message contains bytes > 127
    requiretls: bool = False  # RFC 8689: MAIL gets REQUIRETLS; the peer must offer it, in TLS
    smtputf8: bool = False  # RFC 6531: received with SMTPUTF8; the peer must offer it
    # RFC 3461: RET/ENVID, and NOTIFY/ORCPT by position in ``recipients``; sent only to a
    # server that offers DSN (protocols/smtp/esmtpparams.py)
    dsn: EnvelopeDsn = NO_DSN
    # RFC 3030: received with BODY=BINARYMIME; sent by BDAT to a peer offering CHUNKING and
    # BINARYMIME, never by DATA (protocols/smtp/bdatsend.py)
    binarymime: bool = False


@dataclass(frozen=True, slots=True)
class RecipientReport:
    letter: str  # "r" accepted (or not asked about), "h" permanent, "s" temporary
    text: str  # qmail-remote's text; "" for "r"


_LETTER_OUTCOME = {"K": Outcome.SUCCESS, "Z": Outcome.TEMPORARY, "D": Outcome.PERMANENT}


@dataclass(frozen=True, slots=True)
class TransactionResult:
    recipients: tuple[RecipientReport, ...]  # same order as Transaction.recipients
    letter: str  # "K" success, "Z" temporary, "D" permanent
    text: str  # qmail-remote's message report
    dsn: bool = False  # the server offered DSN, so it got the DSN request (RFC 3461 5.2.3)

    def outcomes(self) -> list[tuple[Outcome, str]]:
        """Per recipient, as qmail-send combines the reports (qmail-rspawn, spec 17.1)."""
        out: list[tuple[Outcome, str]] = []
        for report in self.recipients:
            if report.letter == "h":
                out.append((Outcome.PERMANENT, report.text))
            elif report.letter == "s":
                out.append((Outcome.TEMPORARY, report.text))
            else:
                out.append((_LETTER_OUTCOME[self.letter], self.text))
        return out


@dataclass(frozen=True, slots=True)
class Send:
    """Write these bytes to the peer."""

    data: bytes


@dataclass(frozen=True, slots=True)
class StartTls:
    """Do the TLS handshake now (RFC 3207 4), then call ``tls_started`` or ``tls_failed``."""


@dataclass(frozen=True, slots=True)
class Ready:
    """The session is usable: after the greeting and EHLO/HELO (and TLS and EHLO again)."""

    extensions: Mapping[str, str | None]  # upper-case EHLO keyword -> its parameters


@dataclass(frozen=True, slots=True)
class SkipHost:
    """The greeting was 4xx or 5xx: close quietly and try the next MX (spec 17.4)."""

    reason: str


@dataclass(frozen=True, slots=True)
class SendBody:
    """354 received: stream the body through a BodyEncoder, then call ``body_sent``."""


@dataclass(frozen=True, slots=True)
class SendChunk:
    """The envelope is accepted, or the last BDAT chunk got its 250 (RFC 3030): call
    ``chunk`` with the next piece of the body (``protocols/smtp/bdatsend.py``)."""


@dataclass(frozen=True, slots=True)
class TransactionDone:
    result: TransactionResult


@dataclass(frozen=True, slots=True)
class Closed:
    """QUIT answered, or the connection is over: close the socket.  Emitted once."""


Event = Send | StartTls | Ready | SkipHost | SendBody | SendChunk | TransactionDone | Closed
