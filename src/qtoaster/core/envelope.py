"""The envelope of one message: sender and recipients, as qmail-queue takes them.

Addresses are ``str`` decoded with ``surrogateescape`` so that any byte that came
over the wire survives the round trip to the queue unchanged.  The null sender is
the empty string; qmail's double-bounce sender is ``#@[]``.
"""

from __future__ import annotations

from dataclasses import dataclass

from qtoaster.core.domain import domain_key

DOUBLE_BOUNCE_SENDER = "#@[]"


@dataclass(frozen=True, slots=True)
class Envelope:
    sender: str
    recipients: tuple[str, ...]

    def to_qmail(self) -> bytes:
        """``F<sender>\\0T<rcpt>\\0...\\0`` (qmail-queue(8), fd 1)."""
        parts = [b"F" + encode(self.sender) + b"\0"]
        parts.extend(b"T" + encode(r) + b"\0" for r in self.recipients)
        parts.append(b"\0")
        return b"".join(parts)


def encode(address: str) -> bytes:
    return address.encode("utf-8", "surrogateescape")


def decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def split_address(address: str) -> tuple[str, str]:
    """Split at the LAST ``@`` (qmail's rule); the domain as :func:`domain_key` names it
    (lower-cased, IDNA U-labels as A-labels), ``""`` if none."""
    local, at, domain = address.rpartition("@")
    if not at:
        return address, ""
    return local, domain_key(domain)
