"""Success and delay notices (RFC 3461 6.2, RFC 3464): what a sender asked for with
``NOTIFY=SUCCESS`` or ``NOTIFY=DELAY`` (or got by default: DELAY, core/dsn.py).

Pure, like :mod:`qtoaster.send.dsn`, and always RFC 3464 whatever ``[queue]
bounce_format`` says (QSBMF has no success or delay form): a ``multipart/report`` with a
text part, the ``message/delivery-status`` part (one block per recipient, ``Action:
delivered``, ``relayed`` or ``delayed``) and the original's header as
``text/rfc822-headers`` (RFC 3462 3: a notice that is not a failure returns the header
only, as Postfix does, whatever RET asked).

Invariants: no notice to the null sender nor to ``#@[]`` (a notice about a bounce, RFC
3461 6.2: "MUST NOT" for a null MAIL FROM); the notice itself goes from ``<>``; LF line ends.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from qtoaster.core.envelope import DOUBLE_BOUNCE_SENDER, Envelope, encode
from qtoaster.queue.format import date822
from qtoaster.send.bounce import Bounce, BounceParams, quote, quote2, strip_verp
from qtoaster.send.dsn import address_field, message_fields, original_recipient

DELIVERED = "delivered"  # into a mailbox here (RFC 3464 2.3.3)
RELAYED = "relayed"  # to a next hop that did not take the DSN request (RFC 3461 5.2.2)
DELAYED = "delayed"  # still being retried (RFC 3464 2.3.3)

_TEXT = {
    DELIVERED: (
        "Successful Mail Delivery Report",
        "Your message was delivered to the following addresses, as you asked to be told.\n",
    ),
    RELAYED: (
        "Successful Mail Delivery Report",
        "Your message was passed on to the following addresses' mail servers, which do\n"
        "not send delivery notices: this is the last one you will get for them.\n",
    ),
    DELAYED: (
        "Delayed Mail (still being retried)",
        "Your message could not be delivered yet to the following addresses. This is only\n"
        "a warning: I'll keep trying, and you will hear from me again only if I give up.\n",
    ),
}
_STATUS = {DELIVERED: "2.0.0", RELAYED: "2.0.0", DELAYED: "4.0.0"}


@dataclass(frozen=True, slots=True)
class NoticeRecipient:
    address: str
    action: str  # DELIVERED, RELAYED or DELAYED
    report: str  # the last report (qmail-style text), may be ""


def build_notice(
    sender: str,
    recipients: Sequence[NoticeRecipient],
    params: BounceParams,
    now: float,
    *,
    reporting_mta: str,
    arrival: float,
    headers: bytes,
    envid: str | None = None,
    orcpts: Mapping[str, str] | None = None,
    boundary: str | None = None,
) -> Bounce | None:
    """The notice about ``recipients`` (all of one action), or None when none may be sent."""
    sender = strip_verp(sender)
    if not recipients or not sender or sender == DOUBLE_BOUNCE_SENDER:
        return None
    action = recipients[0].action
    subject, why = _TEXT[action]
    boundary = boundary or f"qtoaster-dsn-{uuid.uuid4().hex}"
    envelope = Envelope("", (sender,))
    human = f"Hi. This is the qmail-send program at {params.bouncehost}.\n" + why + "\n"
    human += "".join(f"<{_printable(r.address)}>\n" for r in recipients)
    orcpts = orcpts or {}
    blocks = [
        "Content-Type: message/delivery-status\n",
        message_fields(reporting_mta, arrival, envid),
    ]
    for r in recipients:
        block = original_recipient(orcpts.get(r.address))
        block += "Final-Recipient: " + address_field(r.address) + "\n"
        block += f"Action: {r.action}\nStatus: {_STATUS[r.action]}\n"
        blocks.append(block)
    head = (
        f"Date: {date822(now)}\n"
        f"From: {quote(params.bouncefrom)}@{params.bouncehost}\n"
        f"To: {quote2(_printable(sender))}\n"
        f"Subject: {subject}\n"
        "Auto-Submitted: auto-replied\n"  # RFC 3834 5
        "MIME-Version: 1.0\n"
        "Content-Type: multipart/report; report-type=delivery-status;\n"
        f'\tboundary="{boundary}"\n\n'
        f"--{boundary}\n"
        "Content-Type: text/plain; charset=us-ascii\n\n"
        f"{human}\n--{boundary}\n" + "\n".join(blocks) + f"\n--{boundary}\n"
        "Content-Type: text/rfc822-headers\n\n"
    )
    return Bounce(envelope, encode(head) + headers, f"\n--{boundary}--\n".encode())


def _printable(address: str) -> str:
    return "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in address)
