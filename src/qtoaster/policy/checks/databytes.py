"""databytes: a message over the limit is refused, at MAIL when SIZE= says so (spec 5),
at the final dot when the bytes received say so (spec 3.6).

The limit is DATABYTES from the connection's environment when set (parsed as an
unsigned number, as qmail's scan_ulong does), else control/databytes; 0 means
unlimited.  A SIZE equal to the limit is accepted.  SIZE is only advisory, so the
bytes received in DATA are counted too: smtpd stops writing a message once it passes
the limit (an oversized message costs no disk) and this check refuses it at the dot,
as qmail-smtpd does after reading the whole message.
"""

from __future__ import annotations

from collections.abc import Mapping

from qtoaster.config.control import parse_int
from qtoaster.core.reply import DATABYTES
from qtoaster.policy.verdict import PASS, Facts, SessionState, Stage, Verdict


def effective_databytes(env: Mapping[str, str], control_value: int) -> int:
    raw = env.get("DATABYTES")
    if raw is None:
        return control_value
    return parse_int(raw.strip(), 0)  # no leading digits: 0, unlimited (scan_ulong)


class Databytes:
    name = "databytes"
    stages = frozenset({Stage.MAIL, Stage.DATA})

    def __init__(self, control_value: int) -> None:
        self._control_value = control_value

    def check(self, stage: Stage, facts: Facts, state: SessionState) -> Verdict:
        size = facts.message.size if facts.message is not None else facts.size
        if size is None:
            return PASS
        limit = effective_databytes(facts.env, self._control_value)
        if limit and size > limit:
            return Verdict(reply=DATABYTES)
        return PASS
