"""What a transaction asks of the next hop: whether it can be offered at all, the MAIL
parameters, and the addresses as written on the wire (the client engine's pure part).

- REQUIRETLS (RFC 8689 4.2.1), 8BITMIME (RFC 6152 3) and SIZE (RFC 1870 4) as
  qmail-remote and the RFCs have them: a hop that lacks what the message needs gets
  nothing and the transaction fails permanently with the reason.
- BINARYMIME (RFC 3030 3): a message received with ``BODY=BINARYMIME``
  (``Transaction.binarymime``) goes only to a hop that offers CHUNKING and BINARYMIME
  (it is sent by BDAT, ``bdatsend.py``); any other hop gets nothing and the message fails
  with ``#5.6.3``.  Its ``BODY=BINARYMIME`` stands for 8BITMIME too (one BODY value).
- SMTPUTF8 (RFC 6531): a transaction *needs* it when the message was received with
  SMTPUTF8 (``Transaction.smtputf8``, the queue's ``smtputf8`` origin flag) or an
  envelope address has a non-ASCII local part.  A hop that offers SMTPUTF8 gets ``MAIL
  ... SMTPUTF8`` and the addresses as they are; one that does not gets nothing: the
  message fails with ``#5.6.7`` (RFC 6531 3.2) and bounces, never downgraded.  A
  transaction that does not need it has every domain written as A-labels (RFC 6531 3.2
  allows this conversion), so a U-label domain reaches any hop.

Invariant: pure functions of the transaction and the hop's EHLO keywords.
"""

from __future__ import annotations

from collections.abc import Mapping

from qtoaster.core.domain import ascii_address, needs_smtputf8
from qtoaster.protocols.smtp.client_events import Transaction


def needs_utf8(tx: Transaction) -> bool:
    """Whether only a hop offering SMTPUTF8 may receive *tx* (module docstring)."""
    return tx.smtputf8 or needs_smtputf8((tx.sender, *tx.recipients))


def refusal(
    tx: Transaction, peer: str, tls_active: bool, extensions: Mapping[str, str | None]
) -> str | None:
    """Why ``tx`` cannot be offered to this server at all (nothing is sent)."""
    if any("\r" in a or "\n" in a for a in (tx.sender, *tx.recipients)):
        return "Sorry, an envelope address contains CR or LF. (#5.1.3)"
    if not tx.recipients:
        return f"Giving up on {peer}."
    if tx.requiretls and not tls_active:  # a reused clear-text session
        return f"REQUIRETLS: no TLS with {peer}. (#5.7.10)"
    if tx.requiretls and "REQUIRETLS" not in extensions:
        # RFC 8689 4.2.1; 5.7.30 is its "REQUIRETLS support required".
        return f"{peer} does not support REQUIRETLS, which the sender required. (#5.7.30)"
    if needs_utf8(tx) and "SMTPUTF8" not in extensions:
        # RFC 6531 3.2: no SMTPUTF8 at the next hop, no UTF-8 addresses or headers there.
        return (
            f"{peer} does not support SMTPUTF8 and the message needs it"
            " (a UTF-8 address or a message sent with SMTPUTF8). (#5.6.7)"
        )
    if tx.binarymime and not {"CHUNKING", "BINARYMIME"} <= extensions.keys():
        # RFC 3030 3: BINARYMIME only by BDAT, to a hop that offers both; no down-conversion.
        return (
            f"{peer} does not support BINARYMIME and CHUNKING, and the message was sent"
            " with BODY=BINARYMIME: no next hop takes it. (#5.6.3)"
        )
    if tx.eightbit and not tx.binarymime and "8BITMIME" not in extensions:
        # RFC 6152 3: no 8BITMIME, no 8-bit data; we do not downgrade.
        return "Remote host does not support 8BITMIME and the message has 8-bit content. (#5.6.3)"
    limit = (extensions.get("SIZE") or "").strip()
    if limit.isdigit() and 0 < int(limit) < tx.size:  # RFC 1870 4
        return (
            f"{peer} rejected the message size: {tx.size} bytes is more than"
            f" the limit of {int(limit)}. (#5.3.4)"
        )
    return None


def wire_address(tx: Transaction, address: str) -> bytes:
    """*address* as MAIL/RCPT write it: as is in an SMTPUTF8 transaction, else with its
    domain as A-labels."""
    text = address if needs_utf8(tx) else ascii_address(address)
    return text.encode("utf-8", "surrogateescape")
