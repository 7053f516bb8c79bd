"""clamd at the final dot: a message with a virus is refused (spec 11, issue 7).

The spooled message (at most ``max_bytes`` of it) goes to clamd with zINSTREAM
(``scanners/clamd.py``); a virus is answered ``554 sorry, this message contains a virus
(#5.7.1)`` and the log line names it.  On when ``[clamd]`` is configured and enabled;
CLAMD in tcp.smtp switches it per client (``"0"`` or empty: off).  A clamd that gives
no verdict is ``on_unavailable``'s business (``policy/scanning.py``).

Invariant: the check reads the spool only inside the awaitable it returns, after the
session has flushed it (``MessageFacts``).
"""

from __future__ import annotations

from collections.abc import Awaitable

from qtoaster.config.settings import ScannerSettings
from qtoaster.core.reply import Reply
from qtoaster.policy.scanning import switched_on, unavailable
from qtoaster.policy.verdict import PASS, Facts, SessionState, Stage, Verdict
from qtoaster.scanners import ScannerUnavailable
from qtoaster.scanners.clamd import clamd_scan

VIRUS = Reply(554, "sorry, this message contains a virus (#5.7.1)")


class Clamd:
    name = "clamd"
    stages = frozenset({Stage.DATA})

    def __init__(self, settings: ScannerSettings | None) -> None:
        self._settings = settings  # None: no [clamd]

    def check(
        self, stage: Stage, facts: Facts, state: SessionState
    ) -> Verdict | Awaitable[Verdict]:
        if not switched_on(self._settings, facts.env, "CLAMD"):
            return PASS
        assert self._settings is not None
        return self._scan(self._settings, facts)

    async def _scan(self, settings: ScannerSettings, facts: Facts) -> Verdict:
        message = facts.message
        assert message is not None
        try:
            result = await clamd_scan(
                settings.address,
                message.path,
                message.body_offset,
                timeout=settings.timeout,
                max_bytes=settings.max_bytes,
            )
        except ScannerUnavailable as exc:
            return unavailable(settings, facts, self.name, exc)
        if result.infected:
            return Verdict(reply=VIRUS, why=f"virus {result.virus}")
        return PASS
