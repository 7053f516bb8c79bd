"""spamd at the final dot: score the message, add the score headers, refuse at or above
``reject_score`` (spec 11, issue 7).

The spooled message goes to spamd (``SYMBOLS SPAMC/1.5``, ``scanners/spamd.py``).  A
message it scores is let through with ``X-Spam-Status`` and ``X-Spam-Score`` header
lines, which the session puts on top of the message before the commit
(``Verdict.headers``); at or above ``reject_score`` (0: never) it is refused with
``554 sorry, this message looks like spam (#5.7.1)``.  Messages over ``max_bytes``
(spamc's 512 KiB) are not scored.  On when ``[spamd]`` is configured and enabled; SPAMD
in tcp.smtp switches it per client.  A spamd that gives no verdict is
``on_unavailable``'s business (``policy/scanning.py``).

Invariant: the check reads the spool only inside the awaitable it returns, and never
writes it: the headers are the session's to add.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable

from qtoaster.config.settings import ScannerSettings
from qtoaster.core.reply import Reply
from qtoaster.policy.scanning import switched_on, unavailable
from qtoaster.policy.verdict import PASS, Facts, SessionState, Stage, Verdict
from qtoaster.scanners import ScannerUnavailable
from qtoaster.scanners.spamd import SpamdTooBig, spam_headers, spamd_check

log = logging.getLogger("qtoaster.policy")

SPAM = Reply(554, "sorry, this message looks like spam (#5.7.1)")


class Spamd:
    name = "spamd"
    stages = frozenset({Stage.DATA})

    def __init__(self, settings: ScannerSettings | None, me: str) -> None:
        self._settings = settings  # None: no [spamd]
        self._me = me  # control/me, named in X-Spam-Status

    def check(
        self, stage: Stage, facts: Facts, state: SessionState
    ) -> Verdict | Awaitable[Verdict]:
        if not switched_on(self._settings, facts.env, "SPAMD"):
            return PASS
        assert self._settings is not None
        return self._score(self._settings, facts)

    async def _score(self, settings: ScannerSettings, facts: Facts) -> Verdict:
        message = facts.message
        assert message is not None
        try:
            result = await spamd_check(
                settings.address,
                message.path,
                message.body_offset,
                timeout=settings.timeout,
                max_bytes=settings.max_bytes,
            )
        except SpamdTooBig as exc:
            log.info("spamd not scored, %s", exc)
            return PASS
        except ScannerUnavailable as exc:
            return unavailable(settings, facts, self.name, exc)
        if settings.reject_score and result.score >= settings.reject_score:
            return Verdict(reply=SPAM, why=f"score {result.score:.1f}")
        return Verdict(headers=spam_headers(result, self._me))
