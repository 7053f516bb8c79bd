"""The vacation autoresponder's decision and reply (RFC 3834; docs/vacation.md).

Pure: the header of a delivered message, its envelope sender, the user's addresses and
setting, and when this sender was last answered, give either a :class:`Reply` (the
envelope recipient and the message bytes) or a :class:`Skip` naming why not.

Never answered (RFC 3834 section 2, vacation(1), RFC 5230 4.5):
- the null sender ``<>`` and qmail's double-bounce sender ``#@[]`` (bounces);
- senders that are robots by name (MAILER-DAEMON, postmaster, owner-*, *-request, ...);
- a message whose ``Auto-Submitted`` is anything but ``no`` (this covers our own replies,
  which carry ``auto-replied``; they also leave with the null sender, RFC 3834 5.1);
- mailing-list mail (``List-Id`` or any RFC 2369 ``List-*`` header, ``Mailing-List``) and
  ``Precedence: bulk|list|junk``; ``X-Auto-Response-Suppress: All|OOF`` (Microsoft's);
- mail the spam scanner marked (``X-Spam-Flag: YES``, ``X-Spam-Status: Yes``);
- a message that does not name one of the user's addresses in To, Cc, Bcc or their
  Resent- forms (vacation(1) and RFC 5230 4.5: mail that reached the user through a
  list or a Bcc it cannot see is not answered);
- a sender answered less than the setting's period ago.

Invariant: a reply carries ``Auto-Submitted: auto-replied`` (RFC 3834 5.2) and threads to
the message answered (In-Reply-To, References: RFC 3834 3.1.3, RFC 5322 3.6.4); it is
never built for a skipped message.
"""

from __future__ import annotations

import email.policy
from collections.abc import Iterable
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.utils import formatdate, getaddresses

from qtoaster.core.envelope import DOUBLE_BOUNCE_SENDER, split_address
from qtoaster.directory.model import Vacation

# vacation(1)'s junk senders, and the no-reply names that became common since.
ROBOT_NAMES = frozenset(
    ("mailer-daemon", "postmaster", "listserv", "majordomo", "noreply", "no-reply", "nobody")
)
ROBOT_PREFIXES = ("owner-",)
ROBOT_SUFFIXES = ("-request", "-owner", "-bounces", "-bounce")
LIST_HEADERS = (
    "list-id",
    "list-help",
    "list-unsubscribe",
    "list-subscribe",
    "list-post",
    "list-owner",
    "list-archive",
    "mailing-list",
    "x-mailing-list",
)
BULK = frozenset(("bulk", "list", "junk"))
ADDRESS_HEADERS = ("to", "cc", "bcc", "resent-to", "resent-cc", "resent-bcc")
REFERENCES_KEPT = 10  # the last ids of References carried into the reply
_POLICY = email.policy.default.clone(linesep="\n", max_line_length=78)


@dataclass(frozen=True, slots=True)
class Skip:
    why: str  # a few words for the log line


@dataclass(frozen=True, slots=True)
class Reply:
    to: str  # the envelope sender answered (the reply's only recipient)
    message: bytes  # LF line ends, as the queue stores messages


def why_not(
    head: Message,
    sender: str,
    addresses: Iterable[str],
    vacation: Vacation,
    last: float | None,
    now: float,
) -> str | None:
    """Why the message with header ``head`` from ``sender`` gets no reply, or None."""
    if not vacation.active(now):
        return "not active"
    if not sender:
        return "null sender"
    if sender == DOUBLE_BOUNCE_SENDER:
        return "double bounce"
    if is_robot(sender):
        return "automatic sender"
    auto = _first(head, "auto-submitted")
    if auto is not None and _token(auto) != "no":
        return "auto-submitted"
    if any(head.get(name) is not None for name in LIST_HEADERS):
        return "mailing list"
    precedence = _first(head, "precedence")
    if precedence is not None and _token(precedence) in BULK:
        return "bulk precedence"
    suppress = _first(head, "x-auto-response-suppress") or ""
    if {"all", "oof"} & {word.strip().lower() for word in suppress.split(",")}:
        return "auto-response suppressed"
    if spam_marked(head):
        return "spam"
    if not _addressed_to(head, addresses):
        return "not addressed to the user"
    if last is not None and now - last < vacation.period:
        return "answered already"
    return None


def decide(
    head: Message,
    sender: str,
    user: str,
    addresses: Iterable[str],
    vacation: Vacation,
    last: float | None,
    now: float,
    message_id: str,
) -> Reply | Skip:
    """The reply from ``user`` to ``sender`` (``message_id`` is the reply's own), or why
    there is none."""
    why = why_not(head, sender, addresses, vacation, last, now)
    if why is not None:
        return Skip(why)
    try:
        return Reply(sender, build_reply(head, sender, user, vacation, now, message_id))
    except (ValueError, TypeError, IndexError):  # email's header parser on a strange sender
        return Skip("unanswerable sender")


def build_reply(
    head: Message, sender: str, user: str, vacation: Vacation, now: float, message_id: str
) -> bytes:
    """The reply's bytes: a text/plain message from ``user`` to ``sender``."""
    reply = EmailMessage(policy=_POLICY)
    reply["From"] = user
    reply["To"] = sender
    reply["Subject"] = vacation.subject or f"Auto: {_subject(head) or 'your message'}"
    reply["Date"] = formatdate(now)
    reply["Message-ID"] = message_id
    original = _message_id(head)
    if original is not None:
        # RFC 5322 3.6.4: References is the parent's References (else its In-Reply-To)
        # followed by the parent's Message-ID.
        parents = (_first(head, "references") or _first(head, "in-reply-to") or "").split()
        kept = [i for i in parents if i.startswith("<") and i.endswith(">")]
        reply["In-Reply-To"] = original
        reply["References"] = " ".join([*kept[-REFERENCES_KEPT + 1 :], original])
    reply["Auto-Submitted"] = "auto-replied"  # RFC 3834 5.2
    body = "\n".join(vacation.body.splitlines()) + "\n"
    cte = "7bit" if body.isascii() else "quoted-printable"
    reply.set_content(body, cte=cte)
    return reply.as_bytes()


def is_robot(sender: str) -> bool:
    local = split_address(sender)[0].lower()
    return (
        local in ROBOT_NAMES or local.startswith(ROBOT_PREFIXES) or local.endswith(ROBOT_SUFFIXES)
    )


def spam_marked(head: Message) -> bool:
    """Whether the spam scanner marked the message: the first ``X-Spam-Flag`` is YES or
    the first ``X-Spam-Status`` starts with Yes (SpamAssassin's headers; our spamd check
    puts its own on top of the message, so the first ones are the scanner's)."""
    flag = _first(head, "x-spam-flag")
    if flag is not None and flag.strip().lower() == "yes":
        return True
    status = _first(head, "x-spam-status")
    return status is not None and _token(status.replace(",", " ")) == "yes"


def _addressed_to(head: Message, addresses: Iterable[str]) -> bool:
    wanted = {address.lower() for address in addresses}
    values = [str(v) for name in ADDRESS_HEADERS for v in head.get_all(name) or ()]
    return any(address.lower() in wanted for _, address in getaddresses(values))


def _first(head: Message, name: str) -> str | None:
    value = head.get(name)
    return None if value is None else str(value)


def _token(value: str) -> str:
    """The first word of a header value, lower-case, comments and parameters cut off."""
    words = value.split(";", 1)[0].split("(", 1)[0].split()
    return words[0].lower() if words else ""


def _subject(head: Message) -> str:
    raw = _first(head, "subject")
    if raw is None:
        return ""
    try:
        text = str(make_header(decode_header(raw)))
    except (ValueError, LookupError, UnicodeError):
        text = raw
    return " ".join(text.split())[:200]


def _message_id(head: Message) -> str | None:
    raw = (_first(head, "message-id") or "").strip()
    if raw.startswith("<") and raw.endswith(">") and " " not in raw and len(raw) <= 998:
        return raw
    return None
