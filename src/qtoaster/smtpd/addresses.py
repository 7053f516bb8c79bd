"""Address rewriting smtpd does before any policy check (spec 3.3, 23.2), when two
recipients of one transaction are the same (:func:`recipient_key`), and which non-ASCII
addresses a transaction may use (:func:`utf8_refusal`, RFC 6531).

An address ending in ``@[d.d.d.d]`` where d.d.d.d is this host (the address the
client connected to, or 0.0.0.0, which RFC 1122 3.2.1.3 calls "this host") gets
the bracketed part replaced by control/localiphost, so rcpthosts and local
delivery see our own name.
"""

from __future__ import annotations

from qtoaster.core import reply as R
from qtoaster.core.domain import domain_key, valid_utf8
from qtoaster.core.reply import Reply

THIS_HOST = "0.0.0.0"


def rewrite_localip(address: str, local_ip: str, localiphost: str) -> str:
    local, at, domain = address.rpartition("@")
    if not at or not (domain.startswith("[") and domain.endswith("]")):
        return address
    literal = domain[1:-1]
    if literal.lower().startswith("ipv6:"):
        literal = literal[5:]
    if literal in (local_ip, THIS_HOST):
        return f"{local}@{localiphost}"
    return address


def recipient_key(address: str) -> str:
    """What makes two RCPT addresses the same recipient: the domain (after the last ``@``)
    compared case-insensitively, the local part exactly (RFC 5321 2.4: only the receiving
    host may fold its case)."""
    local, at, domain = address.rpartition("@")
    return f"{local}{at}{domain_key(domain)}" if at else address


def utf8_refusal(address: str, smtputf8: bool) -> Reply | None:
    """Why MAIL/RCPT refuses *address*, or None: a non-ASCII address only in a transaction
    whose MAIL had SMTPUTF8 (RFC 6531 3.4), and then only valid UTF-8 (RFC 6532 3.1)."""
    if address.isascii():
        return None
    if not smtputf8:
        return R.NON_ASCII_ADDRESS
    return None if valid_utf8(address) else R.NOT_UTF8_ADDRESS
