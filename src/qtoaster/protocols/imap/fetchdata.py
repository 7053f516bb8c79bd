"""ENVELOPE and BODY/BODYSTRUCTURE (RFC 9051 7.5.2) from a parsed :class:`MimePart`.

Both work from the header fields and sizes :func:`~.message.parse_message` kept; neither
reads the file. Header values go out as they are in the message (unfolded, white space
trimmed): RFC 2047 encoded-words are not decoded (the client does it), 8-bit bytes go as
a literal (:func:`~.encode.quoted`).

Output follows Dovecot where the RFC leaves a choice, so clients see what they are used
to: types as written in the header (defaults ``"text" "plain" ("charset" "us-ascii")``),
``"7bit"`` when there is no Content-Transfer-Encoding, the first of repeated fields, an
address's comment as its name when it has no display name, an address without ``@``
has the host ``"MISSING_DOMAIN"`` and one without a local part the mailbox
``"MISSING_MAILBOX"``, text types without a charset get ``("charset" "us-ascii")``
appended. A multipart with no parts (no boundary parameter, or the boundary never seen)
is reported with one empty text/plain part, as the grammar needs at least one. A
message/rfc822 part that was not parsed as a message (base64-encoded, or past the depth
limit) is reported as a basic body.

Checked against Dovecot 2.3's output for the messages in tests/protocols/imap/messages/.
"""

from __future__ import annotations

import re

from qtoaster.protocols.imap.encode import nstring, quoted
from qtoaster.protocols.imap.message import MimePart, parse_value_params

_NIL = b"NIL"


# -- addresses (RFC 5322 3.4, leniently) ------------------------------------------------------

# A token: (kind, text). kinds: "a" atom-ish (incl. dots), "q" quoted string, "c" comment,
# "d" domain literal, or a special character itself: < > @ , : ;
_Tok = tuple[str, bytes]


_ATOM = re.compile(rb'[^ \t\r\n"(<>@,:;\[]+')
_QUOTED = re.compile(rb'"((?:[^"\\]|\\.)*)"?', re.S)
_UNESCAPE = re.compile(rb"\\(.)", re.S)


def _tokens(s: bytes) -> list[_Tok]:
    out: list[_Tok] = []
    i, n = 0, len(s)
    atom, quoted_re = _ATOM.match, _QUOTED.match
    while i < n and len(out) < 10_000:
        c = s[i]
        if c in b" \t\r\n":
            i += 1
        elif c == 0x22:  # quoted string
            m = quoted_re(s, i)
            assert m is not None  # the pattern matches any string starting with a quote
            text = m.group(1)
            out.append(("q", _UNESCAPE.sub(rb"\1", text) if b"\\" in text else text))
            i = m.end()
        elif c == 0x28:  # comment
            i = _comment(s, i, out)
        elif c == 0x5B:  # domain literal
            j = s.find(b"]", i)
            j = n - 1 if j < 0 else j
            out.append(("d", s[i : j + 1]))
            i = j + 1
        elif c in b"<>@,:;":
            out.append((chr(c), b""))
            i += 1
        else:
            m = atom(s, i)
            j = m.end() if m else i + 1
            out.append(("a", s[i:j]))
            i = j
    return out


def _comment(s: bytes, i: int, out: list[_Tok]) -> int:
    depth, j, n = 0, i, len(s)
    buf = bytearray()
    while j < n:
        d = s[j]
        if d == 0x5C and j + 1 < n:
            buf.append(s[j + 1])
            j += 2
            continue
        if d == 0x28:
            depth += 1
            if depth > 1:
                buf.append(d)
        elif d == 0x29:
            depth -= 1
            if depth == 0:
                j += 1
                break
            buf.append(d)
        else:
            buf.append(d)
        j += 1
    out.append(("c", bytes(buf)))
    return j


Address = tuple[bytes | None, bytes | None, bytes | None, bytes | None]


def _words(toks: list[_Tok]) -> bytes:
    return b" ".join(t for k, t in toks if k in ("a", "q"))


def _one(toks: list[_Tok]) -> Address | None:
    """One mailbox from its tokens: ``name <local@domain>`` or ``local@domain (name)``."""
    comments = [t for k, t in toks if k == "c"]
    toks = [t for t in toks if t[0] != "c"]
    if not toks:
        return None
    if ("<", b"") in toks:
        lt = toks.index(("<", b""))
        gt = toks.index((">", b"")) if (">", b"") in toks[lt:] else len(toks)
        name_toks, spec = toks[:lt], toks[lt + 1 : gt]
        name: bytes | None = _words(name_toks) or None
        # a source route: <@a,@b:user@host>
        adl = None
        if (":", b"") in spec:
            colon = spec.index((":", b""))
            route = spec[:colon]
            adl = b",".join(b"@" + t for k, t in route if k in ("a", "d")) or None
            spec = spec[colon + 1 :]
    else:
        name, spec, adl = None, toks, None
    if name is None and comments:
        name = comments[-1].strip() or None
    if ("@", b"") in spec:
        at = len(spec) - 1 - spec[::-1].index(("@", b""))
        local = b"".join(t for k, t in spec[:at] if k in ("a", "q"))
        domain = b"".join(t for k, t in spec[at + 1 :] if k in ("a", "d"))
    else:
        local = b"".join(t for k, t in spec if k in ("a", "q"))
        domain = b""
    if not local and not domain and name is None:
        return None
    return (name, adl, local or b"MISSING_MAILBOX", domain or b"MISSING_DOMAIN")


def parse_addresses(value: bytes) -> list[Address]:
    """An address-list header value as ENVELOPE address structures; a group is its start
    marker ``(NIL NIL name NIL)``, its members, and ``(NIL NIL NIL NIL)``."""
    toks = _tokens(value)
    out: list[Address] = []
    cur: list[_Tok] = []
    in_group = False
    in_angle = False
    for t in toks:
        k = t[0]
        if k == "<":
            in_angle = True
        elif k == ">":
            in_angle = False
        if k == ":" and not in_group and not in_angle:
            out.append((None, None, _words(cur) or b"", None))
            in_group = True
            cur = []
        elif k == ";" and in_group and not in_angle:
            a = _one(cur)
            if a:
                out.append(a)
            out.append((None, None, None, None))
            in_group = False
            cur = []
        elif k == "," and not in_angle:
            a = _one(cur)
            if a:
                out.append(a)
            cur = []
        else:
            cur.append(t)
    a = _one(cur)
    if a:
        out.append(a)
    if in_group:
        out.append((None, None, None, None))
    return out


def _address_list(value: bytes | None) -> bytes:
    if value is None:
        return _NIL
    addrs = parse_addresses(value)
    if not addrs:
        return _NIL
    return (
        b"("
        + b"".join(
            b"(%b %b %b %b)" % (nstring(n), nstring(a), nstring(m), nstring(h))
            for n, a, m, h in addrs
        )
        + b")"
    )


def envelope(part: MimePart) -> bytes:
    """``(date subject from sender reply-to to cc bcc in-reply-to message-id)``."""
    h = part.first_values().get
    frm = h(b"from")
    sender = h(b"sender")
    reply_to = h(b"reply-to")
    from_list = _address_list(frm)
    sender_list = _address_list(sender)
    reply_list = _address_list(reply_to)
    # RFC 9051 7.5.2: sender and reply-to default to from (also when present but empty)
    if sender_list == _NIL:
        sender_list = from_list
    if reply_list == _NIL:
        reply_list = from_list
    items = [
        _nstring_value(h(b"date")),
        _nstring_value(h(b"subject")),
        from_list,
        sender_list,
        reply_list,
        _address_list(h(b"to")),
        _address_list(h(b"cc")),
        _address_list(h(b"bcc")),
        _nstring_value(h(b"in-reply-to")),
        _nstring_value(h(b"message-id")),
    ]
    return b"(" + b" ".join(items) + b")"


def _nstring_value(v: bytes | None) -> bytes:
    return _NIL if v is None or v == b"" else quoted(v)


# -- BODY / BODYSTRUCTURE ---------------------------------------------------------------------


def _params(params: list[tuple[bytes, bytes]]) -> bytes:
    if not params:
        return _NIL
    return b"(" + b" ".join(quoted(n) + b" " + quoted(v) for n, v in params) + b")"


def _disposition(part: MimePart) -> bytes:
    v = part.header(b"content-disposition")
    if not v:
        return _NIL
    value, params = parse_value_params(v)
    if not value:
        return _NIL
    return b"(" + quoted(value) + b" " + _params(params) + b")"


def _language(part: MimePart) -> bytes:
    v = part.header(b"content-language")
    if not v:
        return _NIL
    langs = [x.strip() for x in v.split(b",") if x.strip()]
    if not langs:
        return _NIL
    if len(langs) == 1:
        return quoted(langs[0])
    return b"(" + b" ".join(quoted(x) for x in langs) + b")"


def _ext_tail(part: MimePart) -> bytes:
    """disposition language location (shared by both kinds of body)."""
    return b" ".join(
        (_disposition(part), _language(part), _nstring_value(part.header(b"content-location")))
    )


def _is_default_text(part: MimePart) -> bool:
    """text/plain; charset=us-ascii in any case: Dovecot sends the defaults' spelling."""
    return (
        part.ctype.lower() == b"text"
        and part.subtype.lower() == b"plain"
        and [(n.lower(), v.lower()) for n, v in part.params] == [(b"charset", b"us-ascii")]
    )


_EMPTY_TEXT = b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0'


def bodystructure(part: MimePart, extensible: bool = True) -> bytes:
    """BODYSTRUCTURE (``extensible``, with extension data) or BODY (without)."""
    out: list[bytes] = []
    _body(part, extensible, out, 0)
    return b"".join(out)


def _body(part: MimePart, ext: bool, out: list[bytes], depth: int) -> None:
    if part.is_multipart:
        out.append(b"(")
        if part.children:
            for child in part.children:
                _body(child, ext, out, depth + 1)
        else:
            out.append(_EMPTY_TEXT + (b" NIL NIL NIL NIL)" if ext else b")"))
        out.append(b" " + quoted(part.subtype))
        if ext:
            out.append(b" " + _params(part.params) + b" " + _ext_tail(part))
        out.append(b")")
        return
    if part.has_ctype and not _is_default_text(part):
        ctype, subtype, params = part.ctype, part.subtype, part.params
        if ctype.lower() == b"text" and not any(n.lower() == b"charset" for n, _ in params):
            params = [*params, (b"charset", b"us-ascii")]  # RFC 2045 5.2's default, as Dovecot
    elif part.ctype.lower() == b"message":  # a multipart/digest member without a type
        ctype, subtype, params = b"message", b"rfc822", []
    else:
        ctype, subtype, params = b"text", b"plain", [(b"charset", b"us-ascii")]
    fields = [
        quoted(ctype),
        quoted(subtype),
        _params(params),
        _nstring_value(part.header(b"content-id")),
        _nstring_value(part.header(b"content-description")),
        quoted(part.encoding),
        b"%d" % part.body_size,
    ]
    out.append(b"(" + b" ".join(fields))
    if part.message is not None:
        out.append(b" " + envelope(part.message) + b" ")
        _body(part.message, ext, out, depth + 1)
        out.append(b" %d" % part.body_lines)
    elif ctype.lower() == b"text":
        out.append(b" %d" % part.body_lines)
    if ext:
        md5 = _nstring_value(part.header(b"content-md5"))
        out.append(b" " + md5 + b" " + _ext_tail(part))
    out.append(b")")
