"""The framing of the channel between the send role and the remote delivery process (sans-IO).

The send role asks, the remote process answers, over one Unix stream socket
(``remote/link.py`` moves the bytes and the descriptors).  A frame is a 4-byte big-endian
length and that many bytes of UTF-8 JSON, an object whose ``t`` names its kind:

- ``{"t": "deliver", "id": N, "offset": N, "size": N, "sender": S, "recipients": [S...],
  "domain": S, "head": B64, "requiretls": B, "smtputf8": B, "binarymime": B}``: deliver the
  message of the descriptor that travels with this frame (SCM_RIGHTS, sent with the frame's
  first byte), ``size`` bytes from ``offset``, after the bytes of ``head`` (base64; the
  DKIM-Signature fields; absent: none); ``requiretls`` (RFC 8689), ``smtputf8`` (RFC 6531: the
  message was received with SMTPUTF8) and ``binarymime`` (RFC 3030: received with
  BODY=BINARYMIME, sent only by BDAT), each optional, false when absent, written only
  when true;
  ``dsn`` (RFC 3461, absent: none) ``{"mail": [W...], "rcpts": [[POS, [W...]]...]}``, the
  DSN parameters in their wire form (``RET=HDRS``, ``NOTIFY=SUCCESS``, ...) of MAIL and of
  the recipients at those positions in ``recipients``, checked by ``core/dsn.py``'s grammar;
- ``{"t": "answer", "id": N, "reached": B, "results": [[OUTCOME, TEXT]...]}``: one result
  per recipient, in order (OUTCOME is ``core/outcome.py``'s value: success, deferral,
  failure; a third item ``true`` when a success went to a next hop that got the DSN
  request, ``Result.dsn``), and whether some host of the domain answered SMTP.

Invariants: :class:`Decoder` turns any bytes into messages or one :class:`Malformed` (after
which it yields nothing more), never raises, and never buffers more than ``MAX_FRAME`` plus
the bytes of one ``feed``; :func:`encode` and the decoder agree on every message they accept.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from dataclasses import dataclass
from typing import Any

from qtoaster.core import dsn as dsnp
from qtoaster.core.dsn import NO_DSN, EnvelopeDsn, MailDsn, RcptDsn
from qtoaster.core.outcome import Outcome, Result

HEADER = struct.Struct(">I")
MAX_FRAME = 16 << 20  # a request names one domain's recipients of one message: far below
_OUTCOMES = {o.value: o for o in Outcome}


@dataclass(frozen=True, slots=True)
class Deliver:
    id: int
    offset: int
    size: int
    sender: str
    recipients: tuple[str, ...]
    domain: str
    head: bytes = b""
    requiretls: bool = False  # the message was received with REQUIRETLS (RFC 8689)
    smtputf8: bool = False  # the message was received with SMTPUTF8 (RFC 6531)
    dsn: EnvelopeDsn = NO_DSN  # RFC 3461; rcpts by position in ``recipients``
    binarymime: bool = False  # the message was received with BODY=BINARYMIME (RFC 3030)


@dataclass(frozen=True, slots=True)
class Answer:
    id: int
    results: tuple[Result, ...]
    reached: bool


@dataclass(frozen=True, slots=True)
class Malformed:
    """The peer broke the framing; the channel cannot be trusted any further."""

    reason: str


Message = Deliver | Answer


def encode(message: Message) -> bytes:
    """One frame: the length, then the JSON object (ASCII, so any str round-trips)."""
    obj: dict[str, Any]
    if isinstance(message, Deliver):
        obj = {
            "t": "deliver",
            "id": message.id,
            "offset": message.offset,
            "size": message.size,
            "sender": message.sender,
            "recipients": list(message.recipients),
            "domain": message.domain,
        }
        if message.head:
            obj["head"] = base64.b64encode(message.head).decode("ascii")
        if message.requiretls:
            obj["requiretls"] = True
        if message.smtputf8:
            obj["smtputf8"] = True
        if message.binarymime:
            obj["binarymime"] = True
        if not message.dsn.empty:
            obj["dsn"] = _dsn_obj(message.dsn)
    else:
        obj = {
            "t": "answer",
            "id": message.id,
            "reached": message.reached,
            "results": [[r.outcome.value, r.report, *[True] * r.dsn] for r in message.results],
        }
    payload = json.dumps(obj, separators=(",", ":")).encode("ascii")
    if len(payload) > MAX_FRAME:
        raise ValueError(f"channel frame of {len(payload)} bytes is over {MAX_FRAME}")
    return HEADER.pack(len(payload)) + payload


class Decoder:
    """Bytes in, messages out; stops for good at the first malformed frame."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._broken = False

    def feed(self, data: bytes) -> list[Message | Malformed]:
        if self._broken:
            return []
        self._buffer += data
        out: list[Message | Malformed] = []
        while len(self._buffer) >= HEADER.size:
            (length,) = HEADER.unpack_from(self._buffer)
            if length > MAX_FRAME:
                return self._fail(out, f"frame of {length} bytes is over {MAX_FRAME}")
            if len(self._buffer) < HEADER.size + length:
                break
            payload = bytes(self._buffer[HEADER.size : HEADER.size + length])
            del self._buffer[: HEADER.size + length]
            message = parse(payload)
            if isinstance(message, Malformed):
                return self._fail(out, message.reason)
            out.append(message)
        return out

    def _fail(self, out: list[Message | Malformed], reason: str) -> list[Message | Malformed]:
        self._broken = True
        self._buffer = bytearray()
        out.append(Malformed(reason))
        return out


def parse(payload: bytes) -> Message | Malformed:
    """One frame's payload; anything but a well-typed message is Malformed."""
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        return Malformed(f"not JSON: {type(exc).__name__}")
    if not isinstance(obj, dict):
        return Malformed("not an object")
    kind = obj.get("t")
    try:
        if kind == "deliver":
            recipients = tuple(_text(r) for r in _list(obj.get("recipients")))
            return Deliver(
                _count(obj, "id"),
                _count(obj, "offset"),
                _count(obj, "size"),
                _text(obj.get("sender")),
                recipients,
                _text(obj.get("domain")),
                _head(obj.get("head", "")),
                _flag(obj.get("requiretls", False), "requiretls"),
                _flag(obj.get("smtputf8", False), "smtputf8"),
                _dsn(obj.get("dsn", {}), len(recipients)),
                _flag(obj.get("binarymime", False), "binarymime"),
            )
        if kind == "answer":
            reached = obj.get("reached")
            if not isinstance(reached, bool):
                raise TypeError("reached")
            return Answer(
                _count(obj, "id"), tuple(_result(r) for r in _list(obj.get("results"))), reached
            )
    except TypeError as exc:
        return Malformed(f"{kind}: bad field {exc}")
    return Malformed(f"unknown kind {str(kind)[:40]!r}")


def _flag(value: object, key: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(key)
    return value


def _count(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    if type(value) is not int or value < 0:  # bool is an int subclass: refused too
        raise TypeError(key)
    return value


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value


def _head(value: object) -> bytes:
    try:
        return base64.b64decode(_text(value), validate=True)
    except binascii.Error:
        raise TypeError("head") from None


def _list(value: object) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError("not a list")
    return value


def _result(value: object) -> Result:
    items = _list(value)
    if len(items) not in (2, 3) or not isinstance(items[0], str) or items[0] not in _OUTCOMES:
        raise TypeError("result")
    dsn = len(items) == 3 and _flag(items[2], "result")
    return Result(_OUTCOMES[items[0]], _text(items[1]), dsn)


def _dsn_obj(dsn: EnvelopeDsn) -> dict[str, Any]:
    rcpts = [[pos, dsnp.rcpt_words(r)] for pos, r in sorted((dsn.rcpts or {}).items())]
    return {"mail": dsnp.mail_words(dsn.mail), "rcpts": rcpts}


def _dsn(value: object, recipients: int) -> EnvelopeDsn:
    """The ``dsn`` object, every value checked by the RFC 3461 grammar (TypeError if not)."""
    if not isinstance(value, dict):
        raise TypeError("dsn")
    mail = dsnp.mail_dsn(dsnp.params_of([_text(w) for w in _list(value.get("mail", []))]))
    if not isinstance(mail, MailDsn):
        raise TypeError("dsn")
    rcpts: dict[int, RcptDsn] = {}
    for item in _list(value.get("rcpts", [])):
        pair = _list(item)
        if len(pair) != 2 or type(pair[0]) is not int or not 0 <= pair[0] < recipients:
            raise TypeError("dsn")
        rcpt = dsnp.rcpt_dsn(dsnp.params_of([_text(w) for w in _list(pair[1])]))
        if not isinstance(rcpt, RcptDsn):
            raise TypeError("dsn")
        rcpts[pair[0]] = rcpt
    return EnvelopeDsn(mail, rcpts or None)
