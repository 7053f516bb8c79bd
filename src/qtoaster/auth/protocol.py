"""The auth role's request protocol: what smtpd and pop3d ask over ``run/auth/auth.sock``.

Sans-IO codec, shared by the server (qtoaster.authd) and the client (auth.client).
One JSON object per line (UTF-8, ``\\n``-terminated, at most :data:`MAX_LINE` bytes);
every request carries an ``id`` the answer repeats, so requests may be pipelined on one
connection and answered out of order (a failure waits for the throttle, a success not).

Requests::

    {"id": 7, "op": "verify", "service": "smtp"|"pop3"|"imap"|"http",
     "mechanism": "PLAIN"|"LOGIN"|"CRAM-MD5"|"APOP",
     "user": B64, "secret": B64, "challenge": B64, "ip": "192.0.2.7"}
    {"id": 8, "op": "mechanisms"}
    {"id": 9, "op": "redeem", "ticket": "<32 hex digits>"}
    {"id": 10, "op": "srs-forward", "address": B64, "domain": "fwd.example"}
    {"id": 11, "op": "srs-reverse", "address": B64}

``secret`` is the password (PLAIN, LOGIN) or the hex digest (CRAM-MD5, APOP);
``challenge`` is the CRAM-MD5 challenge or the APOP banner (``<pid.time@host>``), empty for
PLAIN/LOGIN. Base64 because a client may send any bytes (names and passwords are ``str``
with surrogate escapes, core.envelope; they travel as their original bytes).

Answers::

    {"id": 7, "ok": true, "temporary": false, "user": "tim@example.com",
     "reason": "password ok", "flags": 0, "busy": false}
    {"id": 8, "ok": true, "cram": true, "apop": true}
    {"id": 9, "ok": true, "user": B64, "maildir": B64}
    {"id": 10, "ok": true, "temporary": false, "srs": B64, "reason": "rewritten"}

``srs-forward`` rewrites a forwarded message's sender at ``domain`` (the send role's
only, when started as root: whoever may ask can make addresses this server accepts);
``srs-reverse`` checks an SRS address and answers the address it was made from (smtpd's
and the send role's). A refused reverse is ``ok`` false, ``temporary`` false, with one of
mailauth.srs's reasons (``malformed SRS address``, ``bad SRS hash``, ``expired SRS
timestamp``); ``temporary`` true: no usable key, or not this peer's to ask.

A successful pop3 or imap verify also carries ``"ticket": "<32 hex digits>"``: the mailbox
broker (qtoaster.mailboxd) opens that user's Maildir for pop3d (mailbox.sock) or imapd
(imap.sock) only against it, and redeems it
here (``redeem``, allowed to the mailbox owner's uid only when started as root). A ticket
is single use and valid :data:`TICKET_SECONDS`; a failed redeem answers ``ok`` false with
empty ``user`` and ``maildir``.

``temporary`` true means: not checked (directory down; or ``busy``: too many attempts in
flight from that address): smtpd answers ``454``, pop3d ``-ERR [SYS/TEMP]``.
``reason`` is for logs only.
A line that is not a request gets ``{"id": null, "ok": false, "temporary": true, ...}``.

Invariants: :func:`decode_request` and :func:`decode_response` raise only
:class:`ProtocolError`, whatever the bytes; encoding is canonical (sorted keys, no spaces),
so the bytes are stable (tests/auth/test_protocol.py has golden lines).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qtoaster.core.errors import SocketProtocolError
from qtoaster.core.home import Home

MAX_LINE = 65536
SERVICES = ("smtp", "pop3", "imap", "http")  # http: the web admin's logins (docs/http.md)
MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5", "APOP")
TICKET_SECONDS = 60.0


def socket_path(home: Home) -> Path:
    """Where the auth role listens: ``<home>/run/auth/auth.sock``. Under root its directory
    is the auth user's with group ``qtoaster-authc`` and the setgid bit (decision 0007), so
    the socket takes that group and only smtpd and pop3d may connect."""
    return home.run_dir / "auth" / "auth.sock"


# Bytes that are not a request (or an answer) of this protocol: the one class both of our
# socket protocols raise (core/errors.py).
ProtocolError = SocketProtocolError


@dataclass(frozen=True, slots=True)
class VerifyRequest:
    id: int
    service: str
    mechanism: str
    user: str
    secret: str
    challenge: bytes
    ip: str


@dataclass(frozen=True, slots=True)
class MechanismsRequest:
    id: int


@dataclass(frozen=True, slots=True)
class RedeemRequest:
    id: int
    ticket: str


@dataclass(frozen=True, slots=True)
class SrsRequest:
    id: int
    op: str  # "srs-forward" or "srs-reverse"
    address: str  # the sender to rewrite, or the SRS address to reverse
    domain: str = ""  # srs-forward: the forwarding domain


Request = VerifyRequest | MechanismsRequest | RedeemRequest | SrsRequest
SRS_OPS = ("srs-forward", "srs-reverse")


@dataclass(frozen=True, slots=True)
class VerifyResponse:
    id: int | None
    ok: bool
    temporary: bool
    user: str
    reason: str
    flags: int = 0
    busy: bool = False  # temporary because the address has too many attempts in flight
    ticket: str = ""  # pop3 success: what the mailbox broker opens the Maildir against


@dataclass(frozen=True, slots=True)
class MechanismsResponse:
    id: int
    cram: bool
    apop: bool


@dataclass(frozen=True, slots=True)
class RedeemResponse:
    id: int
    ok: bool
    user: str
    maildir: str


@dataclass(frozen=True, slots=True)
class SrsResponse:
    id: int
    ok: bool
    temporary: bool
    address: str  # the rewritten or reversed address ("" unless ok)
    reason: str  # for logs: why not


Response = VerifyResponse | MechanismsResponse | RedeemResponse | SrsResponse


def _b64(text: str | bytes) -> str:
    raw = text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")
    return base64.b64encode(raw).decode("ascii")


def _unb64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise ProtocolError(f"{what}: expected base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError(f"{what}: bad base64") from exc


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def _object(line: bytes) -> dict[str, Any]:
    if len(line) > MAX_LINE:
        raise ProtocolError("line too long")
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ProtocolError("not JSON") from exc
    if not isinstance(obj, dict):
        raise ProtocolError("not a JSON object")
    return obj


def _id(obj: dict[str, Any]) -> int:
    value = obj.get("id")
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise ProtocolError("id: expected an integer")
    return value


def _text(obj: dict[str, Any], key: str, choices: tuple[str, ...] | None = None) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or (choices is not None and value not in choices):
        raise ProtocolError(f"{key}: expected {' or '.join(choices) if choices else 'text'}")
    return value


def _flag(obj: dict[str, Any], key: str) -> bool:
    value = obj.get(key)
    if not isinstance(value, bool):
        raise ProtocolError(f"{key}: expected true or false")
    return value


def encode_request(request: Request) -> bytes:
    if isinstance(request, MechanismsRequest):
        return _line({"id": request.id, "op": "mechanisms"})
    if isinstance(request, RedeemRequest):
        return _line({"id": request.id, "op": "redeem", "ticket": request.ticket})
    if isinstance(request, SrsRequest):
        obj: dict[str, Any] = {"id": request.id, "op": request.op, "address": _b64(request.address)}
        if request.op == "srs-forward":
            obj["domain"] = request.domain
        return _line(obj)
    return _line(
        {
            "id": request.id,
            "op": "verify",
            "service": request.service,
            "mechanism": request.mechanism,
            "user": _b64(request.user),
            "secret": _b64(request.secret),
            "challenge": _b64(request.challenge),
            "ip": request.ip,
        }
    )


def decode_request(line: bytes) -> Request:
    obj = _object(line)
    ident = _id(obj)
    op = _text(obj, "op", ("verify", "mechanisms", "redeem", *SRS_OPS))
    if op in SRS_OPS:
        address = _unb64(obj.get("address"), "address").decode("utf-8", "surrogateescape")
        domain = _text(obj, "domain") if op == "srs-forward" else ""
        return SrsRequest(ident, op, address, domain)
    if op == "mechanisms":
        return MechanismsRequest(ident)
    if op == "redeem":
        return RedeemRequest(ident, _text(obj, "ticket"))
    return VerifyRequest(
        ident,
        _text(obj, "service", SERVICES),
        _text(obj, "mechanism", MECHANISMS),
        _unb64(obj.get("user"), "user").decode("utf-8", "surrogateescape"),
        _unb64(obj.get("secret"), "secret").decode("utf-8", "surrogateescape"),
        _unb64(obj.get("challenge"), "challenge"),
        _text(obj, "ip"),
    )


def encode_response(response: Response) -> bytes:
    if isinstance(response, MechanismsResponse):
        return _line({"id": response.id, "ok": True, "cram": response.cram, "apop": response.apop})
    if isinstance(response, SrsResponse):
        return _line(
            {
                "id": response.id,
                "ok": response.ok,
                "temporary": response.temporary,
                "srs": _b64(response.address),
                "reason": response.reason,
            }
        )
    if isinstance(response, RedeemResponse):
        return _line(
            {
                "id": response.id,
                "ok": response.ok,
                "user": _b64(response.user),
                "maildir": _b64(response.maildir),
            }
        )
    obj = {
        "id": response.id,
        "ok": response.ok,
        "temporary": response.temporary,
        "user": _b64(response.user),
        "reason": response.reason,
        "flags": response.flags,
        "busy": response.busy,
    }
    if response.ticket:
        obj["ticket"] = response.ticket
    return _line(obj)


def decode_response(line: bytes) -> Response:
    obj = _object(line)
    if "cram" in obj:
        return MechanismsResponse(_id(obj), _flag(obj, "cram"), _flag(obj, "apop"))
    if "srs" in obj:
        return SrsResponse(
            _id(obj),
            _flag(obj, "ok"),
            _flag(obj, "temporary"),
            _unb64(obj.get("srs"), "srs").decode("utf-8", "surrogateescape"),
            _text(obj, "reason"),
        )
    if "maildir" in obj:
        return RedeemResponse(
            _id(obj),
            _flag(obj, "ok"),
            _unb64(obj.get("user"), "user").decode("utf-8", "surrogateescape"),
            _unb64(obj.get("maildir"), "maildir").decode("utf-8", "surrogateescape"),
        )
    ident = None if obj.get("id") is None else _id(obj)
    flags = obj.get("flags", 0)
    if not isinstance(flags, int) or isinstance(flags, bool):
        raise ProtocolError("flags: expected an integer")
    return VerifyResponse(
        ident,
        _flag(obj, "ok"),
        _flag(obj, "temporary"),
        _unb64(obj.get("user"), "user").decode("utf-8", "surrogateescape"),
        _text(obj, "reason"),
        flags,
        obj.get("busy") is True,
        _text(obj, "ticket") if "ticket" in obj else "",
    )
