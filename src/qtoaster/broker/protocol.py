"""The mailbox broker's protocol: what pop3d and smtpd ask over ``run/mailbox/mailbox.sock``.

Sans-IO codec, shared by the broker (qtoaster.mailboxd) and its clients (broker.client).
One JSON object per line (``\\n``-terminated, ASCII: names that are not UTF-8 travel as
JSON's ``\\udcXX`` escapes of their surrogates). Strictly one request, then its answer, per
connection at a time; a pop3d connection is one POP3 session's mailbox.

Requests::

    {"op": "open", "ticket": "<32 hex digits>"}     lock + snapshot of the ticket's Maildir
    {"op": "fetch", "n": 3}                         message 3 as an open descriptor
    {"op": "commit", "deleted": [1, 4]}             UPDATE (RFC 1939 6), then unlock
    {"op": "quota", "maildir": "/..", "bytes": 1000, "messages": null}   CHKUSER_MBXQUOTA

Answers carry ``ok`` and only the fields that are not empty::

    {"ok": true, "maildir": "/..", "messages": [["<uid>", <wire size>, <disk size>], ...]}
    {"disk": 120, "ok": true}          + the message's descriptor (SCM_RIGHTS)
    {"ok": true, "problems": ["cannot unlink ..."]}
    {"ok": true, "percent": 93}
    {"error": "in-use", "ok": false, "text": "..."}

``error`` is one of :data:`ERRORS`: ``in-use`` (another session holds the lock),
``maildir`` (qmail-pop3d's -ERR text in ``text``), ``number`` (a message number the
snapshot does not have), ``io`` (a file that cannot be opened), ``ticket`` (unknown, used
or expired), ``denied`` (the peer's uid may not ask this), ``temp`` (anything else).

Invariants: :func:`decode_request` and :func:`decode_answer` raise only
:class:`ProtocolError`, whatever the bytes, and look at no more than :data:`MAX_REQUEST`
(:data:`MAX_ANSWER`) of them; encoding is canonical (sorted keys, no spaces), so the bytes
are stable (tests/broker/test_protocol.py has golden lines).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qtoaster.core.errors import SocketProtocolError
from qtoaster.core.home import Home

# A COMMIT of 100 000 deletions fits; the largest line the broker reads.
MAX_REQUEST = 1 << 20
# A listing of about a million messages; the largest line a client reads.
MAX_ANSWER = 64 << 20
MAX_NUMBER = 2**31
ERRORS = ("in-use", "maildir", "number", "io", "ticket", "denied", "temp", "bad")
_TICKET = re.compile(r"[0-9a-f]{32}")


def socket_path(home: Home) -> Path:
    """Where the broker listens: ``<home>/run/mailbox/mailbox.sock``. Under root its
    directory is the mailbox owner's with the mailbox group and the setgid bit (decision
    0007), so only pop3d and smtpd may connect."""
    return home.run_dir / "mailbox" / "mailbox.sock"


# Bytes that are not a request (or an answer) of this protocol: the one class both of our
# socket protocols raise (core/errors.py).
ProtocolError = SocketProtocolError


@dataclass(frozen=True, slots=True)
class OpenRequest:
    ticket: str


@dataclass(frozen=True, slots=True)
class FetchRequest:
    number: int


@dataclass(frozen=True, slots=True)
class CommitRequest:
    deleted: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class QuotaRequest:
    maildir: str
    bytes: int | None
    messages: int | None


Request = OpenRequest | FetchRequest | CommitRequest | QuotaRequest
Listed = tuple[str, int, int]  # (uid, wire size, disk size) of one message, in order


@dataclass(frozen=True, slots=True)
class Answer:
    ok: bool
    error: str = ""
    text: str = ""
    maildir: str = ""
    messages: tuple[Listed, ...] = ()
    disk: int = 0
    problems: tuple[str, ...] = ()
    percent: int = 0


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("ascii") + b"\n"


def _object(line: bytes, limit: int) -> dict[str, Any]:
    if len(line) > limit:
        raise ProtocolError("line too long")
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ProtocolError("not JSON") from exc
    if not isinstance(obj, dict):
        raise ProtocolError("not a JSON object")
    return obj


def _number(value: object, what: str, *, low: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value < MAX_NUMBER:
        raise ProtocolError(f"{what}: expected a number")
    return value


def _size(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise ProtocolError(f"{what}: expected a size")
    return value


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ProtocolError(f"{what}: expected text")
    return value


def _optional_size(value: object, what: str) -> int | None:
    return None if value is None else _size(value, what)


def encode_request(request: Request) -> bytes:
    if isinstance(request, OpenRequest):
        return _line({"op": "open", "ticket": request.ticket})
    if isinstance(request, FetchRequest):
        return _line({"op": "fetch", "n": request.number})
    if isinstance(request, CommitRequest):
        return _line({"op": "commit", "deleted": list(request.deleted)})
    return _line(
        {
            "op": "quota",
            "maildir": request.maildir,
            "bytes": request.bytes,
            "messages": request.messages,
        }
    )


def decode_request(line: bytes) -> Request:
    obj = _object(line, MAX_REQUEST)
    op = obj.get("op")
    if op == "open":
        ticket = _text(obj.get("ticket"), "ticket")
        if not _TICKET.fullmatch(ticket):
            raise ProtocolError("ticket: expected 32 hex digits")
        return OpenRequest(ticket)
    if op == "fetch":
        return FetchRequest(_number(obj.get("n"), "n", low=1))
    if op == "commit":
        deleted = obj.get("deleted")
        if not isinstance(deleted, list):
            raise ProtocolError("deleted: expected a list")
        return CommitRequest(tuple(_number(n, "deleted", low=1) for n in deleted))
    if op == "quota":
        return QuotaRequest(
            _text(obj.get("maildir"), "maildir"),
            _optional_size(obj.get("bytes"), "bytes"),
            _optional_size(obj.get("messages"), "messages"),
        )
    raise ProtocolError("op: expected open, fetch, commit or quota")


def encode_answer(answer: Answer) -> bytes:
    obj: dict[str, Any] = {"ok": answer.ok}
    if answer.error:
        obj["error"] = answer.error
    if answer.text:
        obj["text"] = answer.text
    if answer.maildir:
        obj["maildir"] = answer.maildir
    if answer.messages:
        obj["messages"] = [list(m) for m in answer.messages]
    if answer.disk:
        obj["disk"] = answer.disk
    if answer.problems:
        obj["problems"] = list(answer.problems)
    if answer.percent:
        obj["percent"] = answer.percent
    return _line(obj)


def decode_answer(line: bytes) -> Answer:
    obj = _object(line, MAX_ANSWER)
    ok = obj.get("ok")
    if not isinstance(ok, bool):
        raise ProtocolError("ok: expected true or false")
    error = _text(obj.get("error", ""), "error")
    if error and error not in ERRORS:
        raise ProtocolError("error: unknown")
    messages = obj.get("messages", [])
    problems = obj.get("problems", [])
    if not isinstance(messages, list) or not isinstance(problems, list):
        raise ProtocolError("messages, problems: expected lists")
    listed = []
    for entry in messages:
        if not isinstance(entry, list) or len(entry) != 3:
            raise ProtocolError("messages: expected [uid, size, disk size]")
        listed.append((_text(entry[0], "uid"), _size(entry[1], "size"), _size(entry[2], "disk")))
    return Answer(
        ok,
        error,
        _text(obj.get("text", ""), "text"),
        _text(obj.get("maildir", ""), "maildir"),
        tuple(listed),
        _size(obj.get("disk", 0), "disk"),
        tuple(_text(p, "problems") for p in problems),
        _number(obj.get("percent", 0), "percent"),
    )
