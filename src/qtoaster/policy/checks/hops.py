"""hops at the final dot: a message that went round too often is refused (spec 3.6).

The hop count is qmail-smtpd's: the message's ``Received:`` and ``Delivered-To:``
header lines, counted by the SMTP engine while the header streams in (DataEnd.hops).
At MAXHOPS (100) or more the message is refused with ``554 too many hops, this message
is looping (#5.4.6)``, since a mail loop would otherwise go on for ever.
"""

from __future__ import annotations

from qtoaster.core.reply import TOO_MANY_HOPS
from qtoaster.policy.verdict import PASS, Facts, SessionState, Stage, Verdict

MAX_HOPS = 100  # qmail-smtpd's MAXHOPS


class Hops:
    name = "hops"
    stages = frozenset({Stage.DATA})

    def check(self, stage: Stage, facts: Facts, state: SessionState) -> Verdict:
        assert facts.message is not None
        return Verdict(reply=TOO_MANY_HOPS) if facts.message.hops >= MAX_HOPS else PASS
