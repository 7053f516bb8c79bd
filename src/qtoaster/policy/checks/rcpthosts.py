"""rcpthosts and RELAYCLIENT: may this client send to this recipient? (spec 3.5)

qmail's rule, exactly: if RELAYCLIENT is set (even empty) every recipient is
accepted and RELAYCLIENT's value is appended to it; otherwise the domain after
the LAST ``@`` must be allowed by control/rcpthosts (or morercpthosts).

Why no address trick can relay: only that last-``@`` domain decides, and local
delivery treats everything before it as an opaque local part.  ``u%h@ours``,
``h!u@ours`` and ``"u@h"@ours`` are therefore mail for a (non-existent) local
user; a source route ``@ours:u@h`` was already stripped by the parser, leaving
``u@h``; an IP literal ``u@[1.2.3.4]`` is a domain that rcpthosts does not list
(unless it is one of our own addresses, rewritten to localiphost first).
"""

from __future__ import annotations

from typing import Protocol

from qtoaster.core.envelope import split_address
from qtoaster.core.reply import NOT_RCPTHOSTS, Reply
from qtoaster.policy.verdict import PASS, Facts, SessionState, Stage, Verdict
from qtoaster.tls.server import nogateway_suffix

# Set by smtpd/secure.py for a TLS session whose certificate did not allow relaying.
NOGATEWAY = "QTOASTER_TLS_NOGATEWAY"


class RcpthostsControls(Protocol):
    def rcpthosts_allows(self, domain: str) -> bool: ...


class Rcpthosts:
    name = "rcpthosts"
    stages = frozenset({Stage.RCPT})

    def __init__(self, controls: RcpthostsControls) -> None:
        self._controls = controls

    def check(self, stage: Stage, facts: Facts, state: SessionState) -> Verdict:
        assert facts.recipient is not None
        relayclient = facts.env.get("RELAYCLIENT")
        if relayclient is not None:
            if relayclient:
                return Verdict(rewritten=facts.recipient + relayclient)
            return PASS
        _, domain = split_address(facts.recipient)
        if self._controls.rcpthosts_allows(domain):
            return PASS
        why = facts.env.get(NOGATEWAY)
        if why is not None:  # TLS with tlsclients, but no certificate that may relay (7.3)
            text = NOT_RCPTHOSTS.text.removesuffix(" (#5.7.1)")
            return Verdict(reply=Reply(553, f"{text}{nogateway_suffix(why)} (#5.7.1)"))
        return Verdict(reply=NOT_RCPTHOSTS)
