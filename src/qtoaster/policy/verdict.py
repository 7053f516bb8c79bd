"""What a check sees and returns: :class:`Facts` in, a :class:`Verdict` out.

Checks never write to the socket and never format wire bytes: they return a
:class:`Verdict` and the pipeline decides what the client hears (DESIGN.md section 5).

Invariants: :class:`Facts` and :class:`MessageFacts` are immutable values; the only
thing a check may change is the :class:`SessionState` the session passes to the
pipeline beside the facts (one per session, typed, one group of fields per check that
counts across commands).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from qtoaster.core.reply import Reply

if TYPE_CHECKING:
    from qtoaster.mailauth.verifier import Evaluation


class Stage(enum.Enum):
    CONNECT = "connect"
    HELO = "helo"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"


@dataclass(frozen=True, slots=True)
class Verdict:
    reply: Reply | None = None  # None: the check lets the command through
    rewritten: str | None = None  # a replacement address (RELAYCLIENT suffix, localiphost)
    delay: float = 0.0  # seconds the session waits before it answers (chkuser, tarpit)
    headers: bytes = b""  # DATA: header lines the session puts on top of the message (spamd)
    # DATA: (start, end) byte ranges of the message's header the session removes before
    # the commit (mailauth: an Authentication-Results forged with our authserv-id)
    drop: tuple[tuple[int, int], ...] = ()
    why: str = ""  # a rejection's detail, added to its log line ("virus Eicar-Test")

    @property
    def rejects(self) -> bool:
        return self.reply is not None


PASS = Verdict()


@dataclass(frozen=True, slots=True)
class MessageFacts:
    """The message at the final dot, as smtpd's intake received it (DATA stage only).

    ``path`` is the spooled file, the message starting at ``body_offset``: complete on
    disk when a check's awaitable runs (the session flushes it first), so a check that
    reads it does so inside the awaitable it returns, never in ``check`` itself.
    """

    path: str
    body_offset: int
    size: int  # message bytes received (counting stops past databytes)
    hops: int  # Received: and Delivered-To: header lines (the hop count, spec 3.6)
    executable: bool  # control/signatures matched while the message streamed in (spec 11)
    too_deep: bool = False  # MIME nested past signatures.DEPTH_MAX: not scanned whole


@dataclass(frozen=True, slots=True)
class Facts:
    """What a check may look at: the connection, the transaction, the command."""

    remote_ip: str
    local_ip: str
    env: Mapping[str, str]
    helo: str | None = None
    sender: str | None = None
    recipient: str | None = None
    size: int | None = None  # MAIL's SIZE= parameter, as declared
    recipients: tuple[str, ...] = field(default_factory=tuple)
    listener: str = "smtp"  # smtp, submission or smtps (rblsmtpd screens smtp only)
    authenticated: bool = False  # the session logged in with SMTP AUTH (mailauth skips it)
    auth_user: str | None = None  # who logged in (ratelimit's per-user limits)
    message: MessageFacts | None = None  # set at DATA only


@dataclass(slots=True)
class ChkuserCounters:
    """chkuser's counts over one session (spec 12.4, 12.5)."""

    recipients: int = 0  # RCPTs counted (CHKUSER_RCPTLIMIT)
    wrong: int = 0  # unknown or domainless recipients (CHKUSER_WRONGRCPTLIMIT)
    refused: int = 0  # refusals so far: each waits ``increase`` seconds longer
    intrusive: bool = False  # a limit was reached: every further RCPT is refused


@dataclass(slots=True)
class GreylistMemo:
    """greylist's memory of one session."""

    whitelisted: bool = False  # the client is auto-whitelisted: no more questions
    spf: tuple[str, str] | None = None  # (sender, SPF result) asked in this session


@dataclass(slots=True)
class EarlyTalk:
    """The pregreet and pipelining tests of one session (the session sets them,
    policy/checks/pregreet.py refuses on them)."""

    tested: bool = False  # the tests apply to this client
    waiting: bool = False  # the greeting is not written yet: any byte now is a pregreet
    offered: bool = False  # EHLO was answered (PIPELINING offered): the test is over
    pregreet: bool = False  # the client talked before the greeting
    pipelining: bool = False  # it sent a command ahead of a reply without PIPELINING


@dataclass(slots=True)
class DnsblMemo:
    """The client's DNSBL score, looked up at CONNECT (policy/checks/dnsbl.py)."""

    score: int = 0
    blocked: Reply | None = None  # the refusal every RCPT gets
    allowed: bool = False  # at or below the allow threshold: the other screens skip it


@dataclass(slots=True)
class SessionState:
    """What checks remember across the commands of one SMTP session.

    The session creates one at connect and passes it to every :meth:`Pipeline.run`;
    nothing else holds it, so it ends with the session.  A check that needs to count
    gets a typed field here (not a free-form dict), so every cross-command memory of
    the policy is listed in this one class.
    """

    chkuser: ChkuserCounters = field(default_factory=ChkuserCounters)
    # mailauth's evaluation of the message at DATA (spf, fcrdns and dmarc share one):
    # (the spool path it is for, the evaluation)
    mailauth: tuple[str, Evaluation] | None = None
    greylist: GreylistMemo = field(default_factory=GreylistMemo)
    early: EarlyTalk = field(default_factory=EarlyTalk)
    dnsbl: DnsblMemo = field(default_factory=DnsblMemo)
