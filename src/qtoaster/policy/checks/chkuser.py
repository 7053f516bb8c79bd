"""chkuser: refuse unknown recipients of hosted domains at RCPT time (spec 12).

This check takes the place of :class:`Rcpthosts` in the RCPT stage: as in the toaster,
every RCPT reaches chkuser, which makes the relay decision (with rcpthosts' rule and its
vanilla reply, spec 26) and then asks the directory whether the mailbox exists.

Decision, in the original's order (spec 12.2): intrusion flag set -> refuse; count the
RCPT and refuse at CHKUSER_RCPTLIMIT (``>=``: the limit-th is already refused); no domain
-> refuse; not in rcpthosts -> relay rule; domain not hosted -> accept, unless
control/locals names it (see below); domain mode and
the domain does not bounce unknown users (catch-all, delete) -> accept; a user or an
alias -> accept, unless CHKUSER_MBXQUOTA percent of its quota is used; else refuse,
counting towards CHKUSER_WRONGRCPTLIMIT.  Each refusal waits first: ``delay`` seconds,
``increase`` more per refusal in the session (spec 12.5).

A domain in control/locals that the directory does not host (``me``, ``localhost``, and
``[our IP]``, which smtpd rewrote to localiphost) is routed as local delivery routes it
(delivery/local.py): the same local part in control/defaultdomain, decided as above.  When
defaultdomain is not hosted either, every such address would bounce: all are refused but
postmaster (RFC 5321 4.5.1), which is accepted as before.

Invariants:
- a directory that cannot be read answers 4xx, never 5xx;
- the event loop never waits for the database or the disk: a cached answer is used at
  once, anything else runs in the executor (the check returns an awaitable);
- the counters live in the session (``SessionState.chkuser``), never in the check;
- an address refused here is one local delivery would bounce (no backscatter), and one
  accepted here is never refused by local delivery for being unknown.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Set
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from qtoaster.core.envelope import split_address
from qtoaster.core.errors import TemporaryFailure
from qtoaster.core.reply import Reply
from qtoaster.directory.cache import MISS
from qtoaster.directory.model import Recipient
from qtoaster.directory.schema import UNKNOWN_BOUNCE
from qtoaster.mailauth.srs import is_srs
from qtoaster.policy.checks.rcpthosts import Rcpthosts, RcpthostsControls
from qtoaster.policy.verdict import PASS, ChkuserCounters, Facts, SessionState, Stage, Verdict

log = logging.getLogger("qtoaster.policy")

# The seed's text for an unknown user (spec 12.3: what the founding document promises);
# the others are stock chkuser 2.0's.
NO_MAILBOX = Reply(550, "sorry, no mailbox here by that name (#5.1.1 - chkusr)")
MAILBOX_FULL = Reply(522, "sorry, recipient mailbox is full (#5.2.2 - chkuser)")
MAX_RCPT = Reply(
    571, "sorry, reached maximum number of recipients for one session (#5.7.1 - chkuser)"
)
INTRUSION = Reply(571, "sorry, you are violating our security policies (#5.7.1 - chkuser)")
NO_DOMAIN = Reply(511, "sorry, you must specify a domain (#5.1.1 - chkuser)")
# Stock chkuser answers 430, which is no RFC 5321 reply; 451 keeps its text and meaning
# (docs/decisions/0004).
UNAVAILABLE = Reply(451, "system temporary unavailable, try again later (#4.3.0 - chkuser)")

MODES = ("domain", "always", "off")
_ATOI = re.compile(r"\s*([+-]?\d+)")
# What _find answers for a control/locals domain when defaultdomain is not hosted either.
NOWHERE: object = object()


class RecipientLookups(Protocol):
    def peek(self, address: str) -> Recipient | object | None: ...
    def resolve(self, address: str) -> Recipient | None: ...


class ChkuserControls(RcpthostsControls, Protocol):
    """rcpthosts, and what local delivery routes by (qtoaster.config.control.Controls)."""

    @property
    def locals(self) -> Set[str]: ...
    @property
    def defaultdomain(self) -> str: ...


@dataclass(frozen=True, slots=True)
class ChkuserSettings:
    mode: str = "domain"  # the default when CHKUSER_START is not set
    delay: float = 1.0
    increase: float = 0.3


class Chkuser:
    name = "chkuser"
    stages = frozenset({Stage.RCPT})

    def __init__(
        self,
        controls: ChkuserControls,
        lookups: RecipientLookups,
        executor: Executor,
        settings: ChkuserSettings,
        percent_used: Callable[[Recipient], int],
        srs: bool = False,
    ) -> None:
        """``srs``: the srs check runs before this one, so an SRS local part is accepted
        here without a user of that name (docs/srs.md)."""
        self._rcpthosts = Rcpthosts(controls)
        self._controls = controls
        self._lookups = lookups
        self._executor = executor
        self._settings = settings
        self._percent_used = percent_used
        self._srs = srs
        self._locals = frozenset(domain.lower() for domain in controls.locals)
        self._defaultdomain = controls.defaultdomain.lower()

    def check(
        self, stage: Stage, facts: Facts, state: SessionState
    ) -> Verdict | Awaitable[Verdict]:
        assert facts.recipient is not None
        mode = _mode(facts.env, self._settings.mode)
        if mode == "off":
            return self._rcpthosts.check(stage, facts, state)
        counters = state.chkuser
        if counters.intrusive:
            return self._refuse(counters, INTRUSION, facts, "rejected intrusion")
        counters.recipients += 1
        limit = _limit(facts.env, "CHKUSER_RCPTLIMIT")
        if limit and counters.recipients >= limit:
            counters.intrusive = True
            return self._refuse(counters, MAX_RCPT, facts, "rejected intrusion")
        _, domain = split_address(facts.recipient)
        if not domain:
            return self._wrong(counters, NO_DOMAIN, facts)
        if not self._controls.rcpthosts_allows(domain):
            relay = self._rcpthosts.check(stage, facts, state)  # relaying: qmail's rule and reply
            if relay.reply is None:
                return relay
            return self._refuse(counters, relay.reply, facts, "rejected relaying")
        if self._srs and is_srs(facts.recipient):
            return PASS  # vouched for by the srs check before this one
        try:
            found = self._find(facts.recipient, self._lookups.peek)
        except TemporaryFailure:
            return self._refuse(counters, UNAVAILABLE, facts, "no auth resource")
        if found is MISS or (self._wants_quota(facts, found)):
            return self._slow(counters, facts, mode)
        return self._decide(counters, facts, mode, found, None)

    # -- decisions -------------------------------------------------------------------

    def _wants_quota(self, facts: Facts, found: object) -> bool:
        return (
            isinstance(found, Recipient)
            and found.user is not None
            and _limit(facts.env, "CHKUSER_MBXQUOTA") > 0
            and (found.user.quota or found.user.quota_messages) is not None
        )

    async def _slow(self, counters: ChkuserCounters, facts: Facts, mode: str) -> Verdict:
        """The lookup (and the quota reading) in the executor, then the decision."""
        assert facts.recipient is not None
        address = facts.recipient
        loop = asyncio.get_running_loop()
        try:
            found = await loop.run_in_executor(
                self._executor, self._find, address, self._lookups.resolve
            )
            percent = None
            if self._wants_quota(facts, found):
                assert isinstance(found, Recipient)
                percent = await loop.run_in_executor(self._executor, self._percent_used, found)
        except (TemporaryFailure, OSError) as exc:
            log.warning("chkuser cannot check %s: %s", address, exc)
            return self._refuse(counters, UNAVAILABLE, facts, "no auth resource")
        return self._decide(counters, facts, mode, found, percent)

    def _find(
        self, address: str, lookup: Callable[[str], Recipient | object | None]
    ) -> Recipient | object | None:
        """``lookup``'s answer for ``address`` as local delivery routes it: a domain the
        directory does not host (None) but control/locals names is the same local part in
        control/defaultdomain; NOWHERE if that is not hosted either."""
        found = lookup(address)
        local, domain = split_address(address)
        if found is not None or domain not in self._locals:
            return found
        found = lookup(f"{local}@{self._defaultdomain}")
        return NOWHERE if found is None else found

    def _decide(
        self,
        counters: ChkuserCounters,
        facts: Facts,
        mode: str,
        found: Recipient | object | None,
        percent: int | None,
    ) -> Verdict:
        if found is None:
            return PASS  # in rcpthosts but not a directory domain (spec 12.2 step 5)
        if found is NOWHERE:
            assert facts.recipient is not None
            local, _ = split_address(facts.recipient)
            if local.lower() == "postmaster":  # RFC 5321 4.5.1: always accepted
                return PASS
            return self._wrong(counters, NO_MAILBOX, facts)
        assert isinstance(found, Recipient)
        if mode == "domain" and found.unknown_user != UNKNOWN_BOUNCE:
            return PASS  # "accepted any rcpt": a catch-all or delete domain
        if not found.exists:
            return self._wrong(counters, NO_MAILBOX, facts)
        limit = _limit(facts.env, "CHKUSER_MBXQUOTA")
        if percent is not None and limit and percent >= limit:
            return self._refuse(counters, MAILBOX_FULL, facts, "mbx overquota")
        return PASS

    def _wrong(self, counters: ChkuserCounters, reply: Reply, facts: Facts) -> Verdict:
        """An unknown or domainless recipient: it counts towards the intrusion threshold,
        and the one that reaches it still gets the normal reply (spec 12.4)."""
        counters.wrong += 1
        limit = _limit(facts.env, "CHKUSER_WRONGRCPTLIMIT")
        if limit and counters.wrong >= limit:
            counters.intrusive = True
            _log(
                "intrusion threshold", facts, "max number of wrong recipients reached", logging.INFO
            )
        return self._refuse(counters, reply, facts, "rejected rcpt")

    def _refuse(self, counters: ChkuserCounters, reply: Reply, facts: Facts, brief: str) -> Verdict:
        delay = self._settings.delay + self._settings.increase * counters.refused
        counters.refused += 1
        # The pipeline logs every refusal (one line, DESIGN.md 5); chkuser's own format
        # is there at debug level for operators who grep for it.
        _log(brief, facts, reply.text, logging.DEBUG)
        return Verdict(reply=reply, delay=delay)


def _log(brief: str, facts: Facts, extended: str, level: int) -> None:
    """chkuser's log line (spec 12.5): ``CHKUSER <brief>: from <sender:remoteinfo:identify>
    remote <helo:remotehost:remoteip> rcpt <rcpt> : <extended>``."""
    env = facts.env
    log.log(
        level,
        "CHKUSER %s: from <%s:%s:%s> remote <%s:%s:%s> rcpt <%s> : %s",
        brief,
        facts.sender or "",
        env.get("TCPREMOTEINFO", ""),
        env.get("CHKUSER_IDENTIFY", ""),
        facts.helo or "",
        env.get("TCPREMOTEHOST", ""),
        facts.remote_ip,
        facts.recipient,
        extended,
    )


def _mode(env: Mapping[str, str], default: str) -> str:
    """CHKUSER_START (ALWAYS or DOMAIN; any other value turns chkuser off), else the
    setting."""
    start = env.get("CHKUSER_START")
    if start is None:
        return default
    upper = start.strip().upper()
    return "always" if upper == "ALWAYS" else "domain" if upper == "DOMAIN" else "off"


def _limit(env: Mapping[str, str], name: str) -> int:
    """A CHKUSER_* number; values < 1 or not numeric mean no limit (spec 12.4): 0."""
    # atoi(3), as chkuser reads them: leading blanks, a sign, digits; the rest ignored.
    found = _ATOI.match(env.get(name, ""))
    return max(int(found.group(1)), 0) if found else 0


def maildir_percent(hostname: str) -> Callable[[Recipient], int]:
    """The CHKUSER_MBXQUOTA reading: percent of the user's Maildir++ quota in use."""
    from qtoaster.maildir.quota import Quota, percent_used

    def percent(found: Recipient) -> int:
        user = found.user
        if user is None:
            return 0
        quota = Quota(user.quota or None, user.quota_messages or None)
        return percent_used(Path(user.maildir), quota, hostname=hostname)

    return percent
