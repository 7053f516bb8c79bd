"""databytes at MAIL: a declared SIZE= above the limit is refused at once (spec 5).

The limit is DATABYTES from the connection's environment when set (parsed as an
unsigned number, as qmail's scan_ulong does), else control/databytes; 0 means
unlimited.  A SIZE equal to the limit is accepted.  The real limit is enforced
again on the bytes received in DATA (smtpd), since SIZE is only advisory.
"""

from __future__ import annotations

from collections.abc import Mapping

from qtoaster.config.control import parse_int
from qtoaster.core.reply import DATABYTES
from qtoaster.policy.verdict import PASS, Facts, Stage, Verdict


def effective_databytes(env: Mapping[str, str], control_value: int) -> int:
    raw = env.get("DATABYTES")
    if raw is None:
        return control_value
    return parse_int(raw.strip(), 0)  # no leading digits: 0, unlimited (scan_ulong)


class Databytes:
    name = "databytes"
    stages = frozenset({Stage.MAIL})

    def __init__(self, control_value: int) -> None:
        self._control_value = control_value

    def check(self, stage: Stage, facts: Facts) -> Verdict:
        limit = effective_databytes(facts.env, self._control_value)
        if limit and facts.size is not None and facts.size > limit:
            return Verdict(reply=DATABYTES)
        return PASS
