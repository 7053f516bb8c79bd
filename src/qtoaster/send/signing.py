"""What the send role puts on top of a message it hands to remote delivery: the DKIM
signatures of our users' mail (docs/dkim.md), or the ARC seal of mail a forward sends on
(docs/srs.md "ARC").

Which messages are signed: those whose queue origin is trusted (``queue/origin.py``: an
SMTP session that authenticated or had RELAYCLIENT, ``queue-inject``/``sendmail``, our
bounces) and whose one RFC 5322 From address is in a domain with active keys.  An alias
domain signs with its own keys, never its target's (the keys are looked up by the From
domain as written).

Which messages are sealed: ``forward`` messages (a ``.qmail``/alias forward of mail that
came from elsewhere) whose envelope sender's domain (the forwarding domain, after SRS) has
an active RSA key: ARC (RFC 8617) knows only rsa-sha256.  The seal copies our own
Authentication-Results (authserv-id ``control/me``) into ARC-Authentication-Results, so the
next hop can trust the verdicts we reached before the forward broke SPF (and maybe DKIM).

Invariants: keys are loaded once, when the role starts (``qtoaster run`` restarts send on
SIGHUP, which so reloads them), never per message; :meth:`OutboundSigner.head` blocks (it
reads the queue file and signs) and is called in this module's own bounded executor, never
on the event loop; a message that cannot be signed (unparsable header, no or several From
addresses, an unreadable file) goes out unsigned, and the reason is logged.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from concurrent.futures import ThreadPoolExecutor
from email.utils import getaddresses
from pathlib import Path
from typing import BinaryIO

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from qtoaster.core.clock import Clock
from qtoaster.core.envelope import split_address
from qtoaster.core.errors import QtoasterError
from qtoaster.mailauth import dkimkeys
from qtoaster.mailauth.arcseal import DnsFunc, arc_seal
from qtoaster.mailauth.dkimsign import MAX_HEADER, Signer, Unsignable, sign_message, split_header
from qtoaster.queue.origin import trusted
from qtoaster.queue.store import QueuedMessage
from qtoaster.send.results import logsafe

log = logging.getLogger("qtoaster.send")

_CHUNK = 1 << 16
SIGNING_THREADS = 2  # signing is CPU work: at most this many messages at once
MAX_SEALED = 10 << 20  # ARC sealing reads the whole message: a larger forward goes unsealed


class OutboundSigner:
    def __init__(
        self,
        signers: dict[str, list[Signer]],
        clock: Clock,
        *,
        expiry: int = 0,
        authserv_id: str = "",
        dnsfunc: DnsFunc | None = None,
    ) -> None:
        self._signers = signers
        self._clock = clock
        self._expiry = expiry
        self._authserv_id = authserv_id  # control/me: whose Authentication-Results ARC copies
        self._dnsfunc = dnsfunc  # the earlier ARC sealers' keys ([dns] nameservers)
        self._pool = ThreadPoolExecutor(SIGNING_THREADS, thread_name_prefix="qt-sign")

    @classmethod
    def load(
        cls,
        home_root: Path,
        clock: Clock,
        *,
        sign: bool,
        expiry: int,
        authserv_id: str = "",
        dnsfunc: DnsFunc | None = None,
    ) -> OutboundSigner:
        """The active keys of every domain under ``HOME/dkim/`` (none when ``sign`` is off);
        a domain whose keys cannot be read signs nothing, and the reason is logged."""
        signers: dict[str, list[Signer]] = {}
        if sign:
            store = dkimkeys.dkim_dir(home_root)
            for domain in dkimkeys.domains(store):
                try:
                    found = dkimkeys.active_signers_of(store, domain)
                except QtoasterError as exc:
                    log.error("dkim not signing for %s: %s", domain, exc)
                    continue
                if found:
                    signers[domain] = found
            if signers:
                log.info(
                    "dkim signing for %s",
                    ", ".join(
                        f"{d} ({', '.join(s.selector for s in k)})" for d, k in signers.items()
                    ),
                )
        return cls(signers, clock, expiry=expiry, authserv_id=authserv_id, dnsfunc=dnsfunc)

    async def head_async(self, message: QueuedMessage) -> bytes:
        """:meth:`head` in the signing threads."""
        if not self._signers:  # nothing to sign or seal with
            return b""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.head, message)

    def head(self, message: QueuedMessage) -> bytes:
        """The header fields to send in front of ``message`` (LF line ends), b"" for none.
        Blocking: reads the queue file."""
        if trusted(message.origin):
            return self._dkim(message)
        if message.origin.split()[:1] == ["forward"]:
            return self._arc(message)
        return b""

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _dkim(self, message: QueuedMessage) -> bytes:
        if not self._signers:
            return b""
        try:
            with open(message.path, "rb") as stream:
                stream.seek(message.body_offset)
                first = _header_chunk(stream)
                domain = from_domain(first)
                signers = self._signers.get(domain or "")
                if not signers:
                    return b""
                rest = iter(lambda: stream.read(_CHUNK), b"")
                head = sign_message(
                    itertools.chain((first,), rest),
                    signers,
                    int(self._clock.time()),
                    self._expiry,
                )
        except Unsignable as exc:
            log.warning("dkim %s sent unsigned: %s", message.qid, logsafe(str(exc)))
            return b""
        except OSError as exc:
            log.warning("dkim %s sent unsigned: %s", message.qid, exc.strerror or exc)
            return b""
        log.info(
            "dkim signed %s d=%s s=%s",
            message.qid,
            domain,
            ",".join(s.selector for s in signers),
        )
        return head

    def _arc(self, message: QueuedMessage) -> bytes:
        _, domain = split_address(message.envelope.sender)
        keys = [s for s in self._signers.get(domain, ()) if isinstance(s.key, rsa.RSAPrivateKey)]
        if not keys or not self._authserv_id:
            return b""
        if message.size > MAX_SEALED:
            log.info("dkim arc: %s not sealed: %d bytes", message.qid, message.size)
            return b""
        key = keys[0]
        assert isinstance(key.key, rsa.RSAPrivateKey)
        pem = key.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        try:
            with open(message.path, "rb") as stream:
                stream.seek(message.body_offset)
                data = stream.read(MAX_SEALED + 1)
            head = arc_seal(
                data,
                domain=key.domain,
                selector=key.selector,
                private_key_pem=pem,
                authserv_id=self._authserv_id,
                timestamp=int(self._clock.time()),
                dnsfunc=self._dnsfunc,
            )
        except Exception as exc:  # a forward goes on unsealed rather than not at all
            log.warning("dkim arc: %s sent unsealed: %s", message.qid, logsafe(str(exc)))
            return b""
        log.info("dkim arc: sealed %s d=%s s=%s", message.qid, key.domain, key.selector)
        return head


def from_domain(header: bytes) -> str | None:
    """The domain of the one address of the one From field; None if there are several
    fields or addresses, none, or the domain is not a plain DNS name."""
    fields, _ = split_header(header)
    values = [value for name, value in fields if name.lower() == b"from"]
    if len(values) != 1:
        raise Unsignable(f"{len(values)} From fields")
    text = values[0].decode("utf-8", "replace").replace("\n", "")
    addresses = [a for _, a in getaddresses([text]) if a]
    if len(addresses) != 1:
        raise Unsignable(f"{len(addresses)} From addresses")
    domain = addresses[0].rpartition("@")[2].strip().lower().rstrip(".")
    try:
        return dkimkeys.check_domain(domain.encode("idna").decode("ascii"))
    except (QtoasterError, UnicodeError):
        return None


def _header_chunk(stream: BinaryIO) -> bytes:
    """From the stream's position: at least the whole header section (its empty line
    included), or the whole message; Unsignable past MAX_HEADER."""
    data = b""
    while True:
        piece = stream.read(_CHUNK)
        data += piece
        if not piece or data.startswith(b"\n") or b"\n\n" in data:
            return data
        if len(data) > MAX_HEADER:
            raise Unsignable(f"header section over {MAX_HEADER} bytes")
