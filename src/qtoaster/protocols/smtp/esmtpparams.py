"""The ESMTP parameters the SMTP client puts on MAIL and RCPT, as wire bytes.

MAIL: ``SIZE`` when offered (RFC 1870 4: our stored size is an estimate, as allowed),
``BODY=BINARYMIME`` for a message received so (RFC 3030 3, sent by BDAT), else
``BODY=8BITMIME`` for 8-bit content (RFC 6152 2: the engine refuses the transaction first
when 8BITMIME, or BINARYMIME and CHUNKING, is not offered), ``REQUIRETLS`` (RFC 8689
4.2.1, same), ``SMTPUTF8`` (RFC 6531 3.4, same), then DSN's ``RET`` and ``ENVID``.
RCPT: DSN's ``NOTIFY`` and ``ORCPT``.

DSN (RFC 3461 5.2): a message relayed to a next hop that offers ``DSN`` in its EHLO reply
keeps its DSN request, the values as they were received; a next hop that does not offer
DSN gets none of them (RFC 3461 4: the parameters are only for a server that announced the
extension), and the relaying MTA owes the sender a ``relayed`` notice itself (5.2.2,
``send/notices.py``).  The values travel in their wire form (xtext, ``core/dsn.py``),
checked when received and again when read from the queue or the remote channel; one that
breaks the grammar here anyway (a bug above) is left out rather than sent, so a command line
never carries a space, CR or LF it should not.

Invariants: pure; each parameter is `` KEY=value`` (or `` KEY``) with a leading space, ready
to follow ``<address>``; no DSN parameter unless the server offered DSN.
"""

from __future__ import annotations

from collections.abc import Mapping

from qtoaster.core import dsn as dsnp
from qtoaster.core.dsn import MailDsn, RcptDsn
from qtoaster.protocols.smtp.client_events import Transaction
from qtoaster.protocols.smtp.nexthop import needs_utf8


def mail_params(tx: Transaction, extensions: Mapping[str, str | None]) -> bytes:
    """What follows ``MAIL FROM:<sender>`` for ``tx`` at a server with ``extensions``."""
    params = b""
    if "SIZE" in extensions:
        params += b" SIZE=%d" % tx.size
    if tx.binarymime:  # RFC 3030 3 (nexthop.refusal: only to a hop that offers it)
        params += b" BODY=BINARYMIME"
    elif tx.eightbit:
        params += b" BODY=8BITMIME"
    if tx.requiretls:
        params += b" REQUIRETLS"
    if needs_utf8(tx):
        params += b" SMTPUTF8"  # RFC 6531 3.4 (nexthop.refusal: only to a hop that offers it)
    mail = tx.dsn.mail
    if "DSN" in extensions and not mail.empty:
        words = dsnp.mail_words(mail)
        if isinstance(dsnp.mail_dsn(dsnp.params_of(words)), MailDsn):
            params += _wire(words)
    return params


def rcpt_params(tx: Transaction, position: int, extensions: Mapping[str, str | None]) -> bytes:
    """What follows ``RCPT TO:<address>`` for recipient ``position`` of ``tx``."""
    rcpt = tx.dsn.rcpt(position)
    if "DSN" not in extensions or rcpt.empty:
        return b""
    words = dsnp.rcpt_words(rcpt)
    if not isinstance(dsnp.rcpt_dsn(dsnp.params_of(words)), RcptDsn):
        return b""
    return _wire(words)


def _wire(words: list[str]) -> bytes:
    return b"".join(b" " + w.encode("ascii") for w in words)
