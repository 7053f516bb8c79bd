"""The mailbox broker's file protocol for imapd, over ``run/mailbox/imap.sock``.

Sans-IO codec shared by the broker (mailboxd/fsserver.py) and imapd's side
(broker/fsclient.py); docs/imap-broker.md describes it. One JSON object per line
(``\\n``-terminated, ASCII: names that are not UTF-8 travel as JSON ``\\udcXX`` escapes of
their surrogates, file contents as base64). Every request carries an ``id`` (a positive
number) that its answer repeats. One connection is one IMAP session's Maildir: requests
are answered in order, one at a time, except ``watch``, which stays pending until a change,
its timeout, or the next request (then it is answered ``changed`` false first).

Requests (``op`` and its fields)::

    open      ticket                 first request: the ticket's Maildir
    listdir   path                   ("" is the Maildir itself)
    stat      path
    stat_many paths                  -> ``stats``: [size, mtime] or null (missing) per path,
                                     in order (at most MAX_STATS paths; one round trip for
                                     imapd's "did the folder change?" probe)
    open_read path                   -> one descriptor (SCM_RIGHTS)
    open_many paths                  -> the descriptors of the ``present`` ones, in order
                                     (at most MAX_FDS paths)
    open_probe paths probe           open_many of ``paths``, and ``stats`` of ``probe``
                                     (at most MAX_STATS) as stat_many: a FETCH's opens
                                     and its "did the folder change?" probe in one trip
    read_file path limit
    write_atomic path data
    append_file path data
    rename_many pairs                [[old, new], ...]
    unlink_many paths
    mkdir     path
    remove_folder path
    rename_folder path new
    deliver   folder data info mtime
    link_copy path folder info
    lock      path                   -> one descriptor
    quota
    watch     dirs timeout

Answers: ``{"id": n, "ok": true, ...}`` with only the fields that are not empty
(``names``, ``size``, ``mtime``, ``data``, ``missing``, ``results``, ``present``, ``name``,
``quota``, ``changed``, ``maildir``, ``stats``), or
``{"id": n, "ok": false, "error": E, "text": ..}``
with ``error`` one of :data:`ERRORS`: ``os`` (``errno`` holds the name, ``ENOENT``...),
``store`` (``code`` holds the IMAP response code, ``OVERQUOTA``), ``ticket`` (unknown,
used or expired), ``denied`` (not imapd's uid), ``bad`` (not a request, or not now),
``temp`` (anything else). The id of an answer to a line that is not a request is 0.

Invariants: :func:`decode_request` and :func:`decode_answer` raise only
:class:`ProtocolError`, whatever the bytes, and refuse lines over :data:`MAX_REQUEST`
(:data:`MAX_ANSWER`); encoding is canonical (sorted keys, no spaces), so the bytes are
stable (tests/broker/test_fsproto.py has golden lines).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qtoaster.core.errors import SocketProtocolError
from qtoaster.core.home import Home

# The largest file a request carries (APPEND's message): base64 makes it 4/3 larger.
MAX_DATA = 48 << 20
MAX_REQUEST = MAX_DATA * 4 // 3 + (1 << 20)
# A state file read back, or a folder of about a million names.
MAX_ANSWER = 64 << 20
MAX_ID = 2**53
MAX_ITEMS = 1_000_000
MAX_TIMEOUT = 86400.0
# One sendmsg carries at most 253 descriptors (SCM_MAX_FD): open_many asks for fewer.
MAX_FDS = 250
MAX_STATS = 64
ERRORS = ("os", "store", "ticket", "denied", "bad", "temp")
OPS = (
    "open",
    "listdir",
    "stat",
    "stat_many",
    "open_read",
    "open_many",
    "read_file",
    "write_atomic",
    "append_file",
    "rename_many",
    "unlink_many",
    "mkdir",
    "remove_folder",
    "rename_folder",
    "deliver",
    "link_copy",
    "lock",
    "quota",
    "watch",
)
FD_OPS = ("open_read", "open_many", "open_probe", "lock")
_TICKET = re.compile(r"[0-9a-f]{32}")
_WORD = re.compile(r"[A-Z][A-Z0-9]{0,31}")

ProtocolError = SocketProtocolError


def socket_path(home: Home) -> Path:
    """``<home>/run/mailbox/imap.sock``: beside mailbox.sock, same directory and mode
    (the mailbox group may connect; started as root only imapd's uid is served)."""
    return home.run_dir / "mailbox" / "imap.sock"


@dataclass(frozen=True, slots=True)
class FsRequest:
    """One request; only the fields its ``op`` uses are set (see the module docstring)."""

    id: int
    op: str
    path: str = ""
    paths: tuple[str, ...] = ()
    pairs: tuple[tuple[str, str], ...] = ()
    new: str = ""
    data: bytes = b""
    limit: int = 0
    folder: str = ""
    info: str = ""
    mtime: float | None = None
    ticket: str = ""
    dirs: tuple[str, ...] = ()
    timeout: float = 0.0
    probe: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FsAnswer:
    id: int
    ok: bool
    error: str = ""
    text: str = ""
    errno: str = ""
    code: str = ""
    names: tuple[str, ...] = ()
    size: int = 0
    mtime: float = 0.0
    data: bytes = b""
    missing: bool = False
    results: tuple[str | None, ...] = ()
    present: tuple[bool, ...] = ()
    name: str = ""
    quota: tuple[int, int | None, int, int | None] | None = None
    changed: bool = False
    maildir: str = ""
    stats: tuple[tuple[int, float] | None, ...] = ()


# Which fields each op carries, in the order of FsRequest.
_FIELDS: dict[str, tuple[str, ...]] = {
    "open": ("ticket",),
    "listdir": ("path",),
    "stat": ("path",),
    "stat_many": ("paths",),
    "open_read": ("path",),
    "open_many": ("paths",),
    "open_probe": ("paths", "probe"),
    "read_file": ("path", "limit"),
    "write_atomic": ("path", "data"),
    "append_file": ("path", "data"),
    "rename_many": ("pairs",),
    "unlink_many": ("paths",),
    "mkdir": ("path",),
    "remove_folder": ("path",),
    "rename_folder": ("path", "new"),
    "deliver": ("folder", "data", "info", "mtime"),
    "link_copy": ("path", "folder", "info"),
    "lock": ("path",),
    "quota": (),
    "watch": ("dirs", "timeout"),
}


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("ascii") + b"\n"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _object(line: bytes, limit: int) -> dict[str, Any]:
    if len(line) > limit:
        raise ProtocolError("line too long")
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("not JSON") from exc
    if not isinstance(obj, dict):
        raise ProtocolError("not a JSON object")
    return obj


def _int(value: object, what: str, high: int = 2**63) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < high:
        raise ProtocolError(f"{what}: expected a number")
    return value


def _float(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(f"{what}: expected a number")
    try:
        number = float(value)
    except OverflowError as exc:  # an integer of hundreds of digits
        raise ProtocolError(f"{what}: expected a finite number") from exc
    if not math.isfinite(number):
        raise ProtocolError(f"{what}: expected a finite number")
    return number


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ProtocolError(f"{what}: expected text")
    return value


def _list(value: object, what: str) -> list[Any]:
    if not isinstance(value, list) or len(value) > MAX_ITEMS:
        raise ProtocolError(f"{what}: expected a list")
    return value


def _texts(value: object, what: str) -> tuple[str, ...]:
    return tuple(_text(v, what) for v in _list(value, what))


def _bytes(value: object, what: str, limit: int) -> bytes:
    text = _text(value, what)
    if len(text) > limit * 4 // 3 + 4:
        raise ProtocolError(f"{what}: too large")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ProtocolError(f"{what}: expected base64") from exc


def encode_request(request: FsRequest) -> bytes:
    obj: dict[str, Any] = {"id": request.id, "op": request.op}
    for field in _FIELDS[request.op]:
        value = getattr(request, field)
        if field == "data":
            obj[field] = _b64(value)
        elif field in ("paths", "dirs", "probe"):
            obj[field] = list(value)
        elif field == "pairs":
            obj[field] = [list(pair) for pair in value]
        else:
            obj[field] = value
    return _line(obj)


def _request_field(field: str, value: object) -> object:
    if field == "data":
        return _bytes(value, field, MAX_DATA)
    if field in ("paths", "dirs", "probe"):
        return _texts(value, field)
    if field == "pairs":
        pairs = []
        for pair in _list(value, field):
            if not isinstance(pair, list) or len(pair) != 2:
                raise ProtocolError("pairs: expected [old, new] pairs")
            pairs.append((_text(pair[0], field), _text(pair[1], field)))
        return tuple(pairs)
    if field == "limit":
        return _int(value, field, MAX_ANSWER + 1)
    if field == "mtime":
        return None if value is None else _float(value, field)
    if field == "timeout":
        timeout = _float(value, field)
        if not 0 <= timeout <= MAX_TIMEOUT:
            raise ProtocolError("timeout: out of range")
        return timeout
    text = _text(value, field)
    if field == "ticket" and not _TICKET.fullmatch(text):
        raise ProtocolError("ticket: expected 32 hex digits")
    return text


def decode_request(line: bytes) -> FsRequest:
    obj = _object(line, MAX_REQUEST)
    ident = _int(obj.get("id"), "id", MAX_ID)
    if ident == 0:
        raise ProtocolError("id: expected a positive number")
    op = obj.get("op")
    if not isinstance(op, str) or op not in _FIELDS:
        raise ProtocolError("op: unknown")
    values: dict[str, Any] = {}
    for field in _FIELDS[op]:
        if field not in obj:
            raise ProtocolError(f"{field}: missing")
        values[field] = _request_field(field, obj[field])
    if op in ("open_many", "open_probe") and len(values["paths"]) > MAX_FDS:
        raise ProtocolError(f"paths: at most {MAX_FDS}")
    if op == "stat_many" and len(values["paths"]) > MAX_STATS:
        raise ProtocolError(f"paths: at most {MAX_STATS}")
    if op == "open_probe" and len(values["probe"]) > MAX_STATS:
        raise ProtocolError(f"probe: at most {MAX_STATS}")
    return FsRequest(ident, op, **values)


def encode_answer(answer: FsAnswer) -> bytes:
    obj: dict[str, Any] = {"id": answer.id, "ok": answer.ok}
    for field in ("error", "text", "errno", "code", "name", "maildir", "size", "mtime"):
        value = getattr(answer, field)
        if value:
            obj[field] = value
    if answer.names:
        obj["names"] = list(answer.names)
    if answer.data:
        obj["data"] = _b64(answer.data)
    if answer.missing:
        obj["missing"] = True
    if answer.results:
        obj["results"] = list(answer.results)
    if answer.present:
        obj["present"] = list(answer.present)
    if answer.quota is not None:
        obj["quota"] = list(answer.quota)
    if answer.changed:
        obj["changed"] = True
    if answer.stats:
        obj["stats"] = [None if st is None else list(st) for st in answer.stats]
    return _line(obj)


def _bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise ProtocolError(f"{what}: expected true or false")
    return value


def _quota(value: object) -> tuple[int, int | None, int, int | None] | None:
    if value is None:
        return None
    items = _list(value, "quota")
    if len(items) != 4:
        raise ProtocolError("quota: expected four numbers")
    used, messages = _int(items[0], "quota"), _int(items[2], "quota")
    limit = None if items[1] is None else _int(items[1], "quota")
    count = None if items[3] is None else _int(items[3], "quota")
    return used, limit, messages, count


def _stats(value: object) -> tuple[tuple[int, float] | None, ...]:
    stats: list[tuple[int, float] | None] = []
    for item in _list(value, "stats"):
        if item is None:
            stats.append(None)
            continue
        if not isinstance(item, list) or len(item) != 2:
            raise ProtocolError("stats: expected [size, mtime] or null")
        stats.append((_int(item[0], "stats"), _float(item[1], "stats")))
    return tuple(stats)


def decode_answer(line: bytes) -> FsAnswer:
    obj = _object(line, MAX_ANSWER)
    ident = _int(obj.get("id"), "id", MAX_ID)
    ok = _bool(obj.get("ok"), "ok")
    error = _text(obj.get("error", ""), "error")
    if error and error not in ERRORS:
        raise ProtocolError("error: unknown")
    code = _text(obj.get("code", ""), "code")
    if code and not _WORD.fullmatch(code):
        raise ProtocolError("code: expected a response code")
    results = tuple(
        None if r is None else _text(r, "results") for r in _list(obj.get("results", []), "r")
    )
    return FsAnswer(
        ident,
        ok,
        error,
        _text(obj.get("text", ""), "text"),
        _text(obj.get("errno", ""), "errno"),
        code,
        _texts(obj.get("names", []), "names"),
        _int(obj.get("size", 0), "size"),
        _float(obj.get("mtime", 0.0), "mtime"),
        _bytes(obj.get("data", ""), "data", MAX_ANSWER),
        _bool(obj.get("missing", False), "missing"),
        results,
        tuple(_bool(p, "present") for p in _list(obj.get("present", []), "present")),
        _text(obj.get("name", ""), "name"),
        _quota(obj.get("quota")),
        _bool(obj.get("changed", False), "changed"),
        _text(obj.get("maildir", ""), "maildir"),
        _stats(obj.get("stats", [])),
    )


def fd_count(request_op: str, answer: FsAnswer) -> int:
    """How many descriptors come with ``answer`` to a request of ``request_op``."""
    if not answer.ok or request_op not in FD_OPS:
        return 0
    if request_op in ("open_many", "open_probe"):
        return sum(answer.present)
    return 1
