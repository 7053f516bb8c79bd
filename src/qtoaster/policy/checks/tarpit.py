"""tarpit: from the tarpitcount-th accepted recipient on, each RCPT waits (spec 10).

control/tarpitcount (default 0: never) and control/tarpitdelay (default 5 seconds);
the connection's TARPITCOUNT and TARPITDELAY override them (read as atoi(3) does,
negative values meaning 0), and NOTARPIT (any value) turns tarpitting off.

The counter is the transaction's: this RCPT is number ``len(Facts.recipients) + 1``,
since Facts.recipients holds the recipients accepted since the last MAIL (the session
empties it at MAIL, RSET and DATA).  That is qmail's counter, reset at every MAIL and
incremented only for RCPTs that pass every check, provided this check comes LAST in the
RCPT stage: a RCPT that reaches it has passed all others, one refused later would
otherwise be counted (and delayed).

Invariant: the check never sleeps; it returns ``Verdict(delay=...)`` and the session
waits with asyncio.sleep, so other sessions go on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from qtoaster.config.rolecontrols import TARPIT_DEFAULT_DELAY, load_tarpit
from qtoaster.policy.verdict import PASS, Facts, SessionState, Stage, Verdict

DEFAULT_DELAY = TARPIT_DEFAULT_DELAY
_ATOI = re.compile(r"\s*([+-]?[0-9]+)")


def _atoi(text: str) -> int:
    """C's atoi: leading blanks, a sign, digits; anything else ignored; none -> 0."""
    found = _ATOI.match(text)
    return int(found.group(1)) if found else 0


def _setting(env: Mapping[str, str], name: str, control_value: int) -> int:
    raw = env.get(name)
    value = control_value if raw is None else _atoi(raw)
    return max(value, 0)


class Tarpit:
    name = "tarpit"
    stages = frozenset({Stage.RCPT})

    def __init__(self, count: int = 0, delay: int = DEFAULT_DELAY) -> None:
        self._count = count
        self._delay = delay

    @classmethod
    def from_control_dir(cls, control_dir: Path) -> Tarpit:
        files = load_tarpit(control_dir)
        return cls(files.count, files.delay)

    def check(self, stage: Stage, facts: Facts, state: SessionState) -> Verdict:
        if "NOTARPIT" in facts.env:
            return PASS
        count = _setting(facts.env, "TARPITCOUNT", self._count)
        if not count or len(facts.recipients) + 1 < count:
            return PASS
        delay = _setting(facts.env, "TARPITDELAY", self._delay)
        return Verdict(delay=float(delay)) if delay else PASS
