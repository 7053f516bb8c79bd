"""pregreet and pipelining at RCPT: a client that talked before our greeting, or sent a
command ahead of our reply before it could know we offer PIPELINING, is refused as
postscreen refuses it with its default ``enforce`` action (postscreen(8),
postscreen_greet_action, postscreen_pipelining_action; issue 18; docs/antispam.md
"Early talkers").

The session detects (smtpd/session.py: bytes that arrive while the greeting is not
written yet; a command with more input behind it before EHLO was answered, after HELO
or before any); these checks refuse every RCPT of such a session with ``550 5.5.1``, so
the refusal is logged with the HELO, sender and recipient (what postscreen's enforce
logs) and the client, whatever it is, hears why.  The session goes on otherwise: a
permanent reply per recipient, nothing dropped silently.

Who is tested (:func:`tested`): clients of the ``smtp`` listener (port 25) only, never
RELAYCLIENT clients, and a client whose DNSBL score is at or below the allow threshold
(policy/checks/dnsbl.py) is let through.  Switch: ``[pregreet] enabled``; PREGREET in
tcp.smtp per client (``"0"`` or empty: off, any other value: on).
"""

from __future__ import annotations

from qtoaster.core.reply import Reply
from qtoaster.policy.verdict import PASS, Facts, SessionState, Stage, Verdict

TALKED_EARLY = Reply(550, "protocol error: talked before the greeting (#5.5.1)")
PIPELINED = Reply(550, "protocol error: commands sent ahead of replies without PIPELINING (#5.5.1)")


def tested(facts: Facts, enabled: bool) -> bool:
    """Whether this client's session is watched for early talk."""
    value = facts.env.get("PREGREET")
    on = enabled if value is None else value not in ("", "0")
    return on and facts.listener == "smtp" and "RELAYCLIENT" not in facts.env


class Pregreet:
    name = "pregreet"
    stages = frozenset({Stage.RCPT})

    def check(self, stage: Stage, facts: Facts, state: SessionState) -> Verdict:
        if state.early.pregreet and not state.dnsbl.allowed:
            return Verdict(reply=TALKED_EARLY, why="sent before the greeting")
        return PASS


class Pipelining:
    name = "pipelining"
    stages = frozenset({Stage.RCPT})

    def check(self, stage: Stage, facts: Facts, state: SessionState) -> Verdict:
        if state.early.pipelining and not state.dnsbl.allowed:
            return Verdict(reply=PIPELINED, why="commands ahead of replies before EHLO")
        return PASS
