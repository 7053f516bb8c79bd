"""signatures at the final dot: executable attachments are refused (spec 11).

control/signatures lists base64 prefixes; smtpd's intake runs the streaming scanner
(``policy/signatures.py``) over the message as it arrives, since the scan needs each
line once and no second read of the spool, and hands the result over as
``MessageFacts.executable``.  A hit is answered ``552 we don't accept email with
executable content (#5.3.4)`` before the scanners run.  A message nested deeper than
``DEPTH_MAX`` multiparts could not be scanned whole: ``552 we don't accept email nested
deeper than 64 MIME levels (#5.3.4)``, logged as ``mime nested too deep``, never passed
unscanned.  EXECUTABLEOK (any value) turns the scan off for a client, both refusals.
"""

from __future__ import annotations

from qtoaster.policy.signatures import EXECUTABLE, TOO_DEEP, disabled_by
from qtoaster.policy.verdict import PASS, Facts, SessionState, Stage, Verdict

_HIT = Verdict(reply=EXECUTABLE, why="executable content")
_TOO_DEEP = Verdict(reply=TOO_DEEP, why="mime nested too deep")


class Signatures:
    name = "signatures"
    stages = frozenset({Stage.DATA})

    def check(self, stage: Stage, facts: Facts, state: SessionState) -> Verdict:
        assert facts.message is not None
        if disabled_by(facts.env):
            return PASS
        if facts.message.executable:
            return _HIT
        if facts.message.too_deep:
            return _TOO_DEEP
        return PASS
