"""Which SASL mechanisms an SMTP session offers (no credential is read here).

Kept apart from auth.verify so that smtpd, which no longer checks passwords itself
(decision 0007), imports nothing that reads the credentials.
"""

from __future__ import annotations

from qtoaster.protocols.sasl import Mechanism


def mechanisms_for(*, tls: bool, allow_plaintext: bool, cram_available: bool) -> list[Mechanism]:
    """The mechanisms to advertise, in the seed's EHLO order ``LOGIN CRAM-MD5 PLAIN``.

    RFC 4954 section 4 / RFC 4616 section 6: the clear-text mechanisms only over TLS unless
    the admin allows them (qmail offered them always); CRAM-MD5 only when users may keep
    its secret. An empty list means: do not advertise AUTH.
    """
    plaintext = tls or allow_plaintext
    offered: list[Mechanism] = []
    if plaintext:
        offered.append(Mechanism.LOGIN)
    if cram_available:
        offered.append(Mechanism.CRAM_MD5)
    if plaintext:
        offered.append(Mechanism.PLAIN)
    return offered
