"""DSN parameters of MAIL and RCPT (RFC 3461) as values, with their grammar and xtext.

MAIL takes ``RET=FULL|HDRS`` and ``ENVID=<xtext>`` (RFC 3461 4.3, 4.4); RCPT takes
``NOTIFY=NEVER`` or a comma list of ``SUCCESS``, ``FAILURE``, ``DELAY`` (4.1) and
``ORCPT=<addr-type>;<xtext>`` (4.2).  :func:`mail_dsn` and :func:`rcpt_dsn` read them from
the parameter dict the SMTP engine emits (keys upper-case); a value that breaks the grammar
gives :data:`BAD_PARAMETER` (501, RFC 3461 4: "syntax error in parameters").

ENVID and ORCPT are kept in their wire form (xtext, printable ASCII without spaces): they
are relayed as received (RFC 3461 5.2) and written to the queue file as is; the reports
show them decoded (:func:`xtext_decode`).

An absent NOTIFY is ``None``: RFC 3461 4.1 leaves the default to the MTA ("either
NOTIFY=FAILURE or NOTIFY=FAILURE,DELAY"); we follow Postfix, FAILURE,DELAY
(:func:`notifies`).

Invariant: every function here is pure and total; none raises on any input.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from qtoaster.core.reply import Reply

SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
DELAY = "DELAY"
NEVER = "NEVER"
DEFAULT_NOTIFY = frozenset((FAILURE, DELAY))  # RFC 3461 4.1, Postfix's choice
MAX_ENVID = 100  # RFC 3461 4.4: at most 100 characters (xtext) in the parameter
MAX_ORCPT = 500  # RFC 3461 4.2: the value, after the "ORCPT=", at most 500 characters

BAD_PARAMETER = Reply(501, "syntax error in DSN parameters (#5.5.4)")

_HEX = "0123456789ABCDEF"


@dataclass(frozen=True, slots=True)
class MailDsn:
    """MAIL's RET (``FULL``/``HDRS``, None: absent) and ENVID (xtext, None: absent)."""

    ret: str | None = None
    envid: str | None = None

    @property
    def empty(self) -> bool:
        return self.ret is None and self.envid is None


@dataclass(frozen=True, slots=True)
class RcptDsn:
    """RCPT's NOTIFY (None: absent) and ORCPT (``addr-type;xtext``, None: absent)."""

    notify: frozenset[str] | None = None
    orcpt: str | None = None

    @property
    def empty(self) -> bool:
        return self.notify is None and self.orcpt is None


NO_MAIL_DSN = MailDsn()
NO_RCPT_DSN = RcptDsn()


def notifies(dsn: RcptDsn, kind: str) -> bool:
    """Whether a notice of ``kind`` (SUCCESS, FAILURE, DELAY) may be sent for it."""
    return kind in (DEFAULT_NOTIFY if dsn.notify is None else dsn.notify)


def xtext_encode(raw: bytes) -> str:
    """RFC 3461 4: ``+XX`` for ``+``, ``=``, and every byte outside ``!``..``~``."""
    return "".join(chr(b) if 33 <= b <= 126 and b not in (43, 61) else f"+{b:02X}" for b in raw)


def xtext_decode(text: str) -> bytes | None:
    """The bytes of an xtext, or None when it is not one (``+`` needs two upper-case hex
    digits; only ``!``..``~`` other than ``=`` may stand for themselves)."""
    out = bytearray()
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "+":
            pair = text[i + 1 : i + 3]
            if len(pair) != 2 or any(c not in _HEX for c in pair):
                return None
            out.append(int(pair, 16))
            i += 3
            continue
        if not ("!" <= ch <= "~") or ch == "=":
            return None
        out.append(ord(ch))
        i += 1
    return bytes(out)


def mail_dsn(params: Mapping[str, str | None]) -> MailDsn | Reply:
    """RET and ENVID of a MAIL command, or BAD_PARAMETER."""
    ret = params.get("RET")
    envid = params.get("ENVID")
    if "RET" in params:
        if ret is None or ret.upper() not in ("FULL", "HDRS"):
            return BAD_PARAMETER
        ret = ret.upper()
    if "ENVID" in params and (
        envid is None or not envid or len(envid) > MAX_ENVID or xtext_decode(envid) is None
    ):
        return BAD_PARAMETER
    return MailDsn(ret, envid)


def rcpt_dsn(params: Mapping[str, str | None]) -> RcptDsn | Reply:
    """NOTIFY and ORCPT of a RCPT command, or BAD_PARAMETER."""
    notify: frozenset[str] | None = None
    if "NOTIFY" in params:
        parsed = parse_notify(params["NOTIFY"] or "")
        if parsed is None:
            return BAD_PARAMETER
        notify = parsed
    orcpt = params.get("ORCPT")
    if "ORCPT" in params:
        if orcpt is None or not valid_orcpt(orcpt):
            return BAD_PARAMETER
        addr_type, _, xtext = orcpt.partition(";")
        orcpt = addr_type.lower() + ";" + xtext  # the addr-type is case-insensitive
    return RcptDsn(notify, orcpt)


def parse_notify(value: str) -> frozenset[str] | None:
    """``NEVER`` alone, or SUCCESS/FAILURE/DELAY separated by commas (RFC 3461 4.1)."""
    words = value.upper().split(",")
    if words == [NEVER]:
        return frozenset((NEVER,))
    if any(w not in (SUCCESS, FAILURE, DELAY) for w in words) or len(set(words)) != len(words):
        return None
    return frozenset(words)


def format_notify(notify: frozenset[str]) -> str:
    """The wire form, in a fixed order: ``SUCCESS,FAILURE,DELAY`` or ``NEVER``."""
    return ",".join(w for w in (NEVER, SUCCESS, FAILURE, DELAY) if w in notify)


def valid_orcpt(value: str) -> bool:
    """``addr-type ";" xtext`` (RFC 3461 4.2), addr-type an atom, at most MAX_ORCPT long."""
    addr_type, semi, xtext = value.partition(";")
    if not semi or not addr_type or not xtext or len(value) > MAX_ORCPT:
        return False
    atom = all(c.isascii() and (c.isalnum() or c in "!#$%&'*+-/=?^_`{|}~") for c in addr_type)
    return atom and xtext_decode(xtext) is not None


def mail_words(dsn: MailDsn) -> list[str]:
    """MAIL's parameters in their wire form: ``RET=HDRS``, ``ENVID=<xtext>`` (as present)."""
    words = [f"RET={dsn.ret}"] if dsn.ret is not None else []
    return words + ([f"ENVID={dsn.envid}"] if dsn.envid is not None else [])


def rcpt_words(dsn: RcptDsn) -> list[str]:
    """RCPT's parameters in their wire form: ``NOTIFY=<list>``, ``ORCPT=<type;xtext>``."""
    words = [f"NOTIFY={format_notify(dsn.notify)}"] if dsn.notify is not None else []
    return words + ([f"ORCPT={dsn.orcpt}"] if dsn.orcpt is not None else [])


def params_of(words: list[str]) -> dict[str, str | None]:
    """``KEY=value`` words back into the dict :func:`mail_dsn` and :func:`rcpt_dsn` read."""
    return {key.upper(): value for key, _, value in (w.partition("=") for w in words)}


def orcpt_text(orcpt: str) -> str:
    """``rfc822; user@example.org`` for a report (RFC 3464 2.3.1), from the stored form."""
    addr_type, _, xtext = orcpt.partition(";")
    raw = xtext_decode(xtext) or b""
    shown = "".join(chr(b) if 32 <= b < 127 else "?" for b in raw)
    return f"{addr_type}; {shown}"


@dataclass(frozen=True, slots=True)
class EnvelopeDsn:
    """The DSN parameters of one message: MAIL's, and RCPT's by recipient index (a
    recipient not in ``rcpts`` had none)."""

    mail: MailDsn = NO_MAIL_DSN
    rcpts: Mapping[int, RcptDsn] | None = None

    def rcpt(self, idx: int) -> RcptDsn:
        return (self.rcpts or {}).get(idx, NO_RCPT_DSN)

    @property
    def empty(self) -> bool:
        return self.mail.empty and not self.rcpts


NO_DSN = EnvelopeDsn()
