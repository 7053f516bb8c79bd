"""SMTP AUTH and the EHLO advertisement for one session (spec 6; RFC 4954, 3207, 6409).

The SASL exchange itself is sans-IO (protocols/sasl.py); this module decides what a
session offers and answers; the check and the failure delay are the auth role's
(qtoaster.authd, asked by smtpd/secure.py).

Rules:
- EHLO lines in the seed's order: greeting, STARTTLS (offered while not in TLS and a
  certificate is installed), ``AUTH <mechs>`` and the old ``AUTH=<mechs>`` form,
  PIPELINING, 8BITMIME, ENHANCEDSTATUSCODES, SIZE, CHUNKING, BINARYMIME (RFC 3030), DSN
  (RFC 3461, the parameters in core/dsn.py); then REQUIRETLS (RFC 8689) in TLS only;
- ``MAIL FROM:<a> REQUIRETLS`` outside TLS gets `REQUIRETLS_NEEDS_TLS`; in TLS the message
  is queued with the ``requiretls`` origin flag (queue/format.py);
- PLAIN and LOGIN are offered only in TLS unless ``[auth] allow_plaintext``; asking for
  them in clear text gets ``538 encryption required for requested authentication
  mechanism (#5.7.11)`` (RFC 4954 6); CRAM-MD5 only when some account keeps secrets;
- AUTH once, outside a transaction (qmail's 503s); a success makes the session a relay
  client (RELAYCLIENT="") unless the user has NO_RELAY.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from qtoaster.auth.mechanisms import mechanisms_for
from qtoaster.core.reply import Reply
from qtoaster.protocols import sasl
from qtoaster.protocols.sasl import Mechanism, SaslServer

# RFC 8689 4.1: REQUIRETLS on MAIL is accepted only in a TLS session (where we offer it);
# 5.7.10 is RFC 5248's "Encryption needed".
REQUIRETLS_NEEDS_TLS = Reply(530, "REQUIRETLS needs a TLS session (#5.7.10)")
ENCRYPTION_REQUIRED = Reply(
    538, "encryption required for requested authentication mechanism (#5.7.11)"
)
# RFC 6409 4.3 / RFC 4954 6: submission wants AUTH before MAIL.
AUTH_REQUIRED = Reply(530, "authentication required (#5.7.0)")
TOO_MANY_FAILURES = Reply(421, "too many authentication failures, closing connection (#4.7.0)")
NOT_YOUR_SENDER = Reply(553, "sorry, that envelope sender is not yours (#5.7.1)")
AUTH_UNAVAILABLE = Reply(454, "oops, unable to check the password now (#4.3.0)")
# The auth role holds at most a few attempts per client address at once (authd.server).
AUTH_BUSY = Reply(454, "too many authentication attempts at once, try again later (#4.7.0)")
TLS_READY = Reply(220, "ready for tls")


@dataclass(frozen=True, slots=True)
class Offer:
    """What one session may use now."""

    starttls: bool
    mechanisms: tuple[Mechanism, ...]  # offered in EHLO
    plaintext_refused: bool  # PLAIN/LOGIN exist but need TLS first
    requiretls: bool = False  # REQUIRETLS (RFC 8689 3): advertised only once TLS is on


def offer(*, tls_active: bool, tls_available: bool, allow_plaintext: bool, cram: bool) -> Offer:
    mechanisms = mechanisms_for(
        tls=tls_active, allow_plaintext=allow_plaintext, cram_available=cram
    )
    return Offer(
        starttls=tls_available and not tls_active,
        mechanisms=tuple(mechanisms),
        plaintext_refused=not (tls_active or allow_plaintext),
        requiretls=tls_active,
    )


def ehlo_lines(greeting: str, offered: Offer, databytes: int) -> list[str]:
    lines = [greeting]
    if offered.starttls:
        lines.append("STARTTLS")
    if offered.mechanisms:
        names = " ".join(m.value for m in offered.mechanisms)
        lines += [f"AUTH {names}", f"AUTH={names}"]
    lines += ["PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", f"SIZE {databytes}"]
    lines.append("SMTPUTF8")  # RFC 6531: UTF-8 addresses after MAIL ... SMTPUTF8
    lines += ["CHUNKING", "BINARYMIME"]  # RFC 3030, on every listener
    lines.append("DSN")  # RFC 3461: NOTIFY, ORCPT, RET, ENVID (core/dsn.py)
    if offered.requiretls:
        lines.append("REQUIRETLS")
    return lines


def begin(
    mechanism_name: str,
    offered: Offer,
    *,
    authenticated: bool,
    in_transaction: bool,
    hostname: str,
) -> SaslServer | Reply:
    """A SASL server for ``AUTH <mechanism>``, or the reply refusing it (spec 6.2 order)."""
    if authenticated:
        return sasl.ALREADY_AUTHENTICATED
    if in_transaction:
        return sasl.AUTH_IN_TRANSACTION
    mechanism = sasl.parse_mechanism(mechanism_name)
    if mechanism is None:
        return sasl.AUTH_UNIMPLEMENTED
    if mechanism not in offered.mechanisms:
        if offered.plaintext_refused and mechanism is not Mechanism.CRAM_MD5:
            return ENCRYPTION_REQUIRED
        return sasl.AUTH_UNIMPLEMENTED
    challenge = None
    if mechanism is Mechanism.CRAM_MD5:
        challenge = sasl.cram_challenge(os.getpid(), int(time.time()), hostname)
    return SaslServer(mechanism, cram_challenge=challenge)


def sender_allowed(sender: str, user: str) -> bool:
    """Submission's sender restriction: the user's address, or one of its extensions
    (``user-ext@domain``), or the null sender."""
    if not sender:
        return True
    local, _, domain = sender.rpartition("@")
    user_local, _, user_domain = user.rpartition("@")
    if domain.lower() != user_domain.lower():
        return False
    local = local.lower()
    return local == user_local or local.startswith(user_local + "-")
