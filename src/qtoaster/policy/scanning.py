"""What the scanner checks (clamd, spamd) share: when they run, and what a scanner that
gives no verdict means (spec 4, 11; docs/antispam.md "clamd and spamd").

Invariant: a scanner that is down, slow or answers garbage never loses a message and
never refuses it for good: ``on_unavailable = "accept"`` lets it through unscanned (and
logs it), ``"tempfail"`` answers 451 so the client retries.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from qtoaster.config.settings import ScannerSettings
from qtoaster.core.reply import Reply
from qtoaster.policy.verdict import PASS, Facts, Verdict

log = logging.getLogger("qtoaster.policy")

SCANNER_DOWN = Reply(451, "temporary failure scanning the message; try again later (#4.3.0)")


def switched_on(settings: ScannerSettings | None, env: Mapping[str, str], var: str) -> bool:
    """A scanner runs when configured and enabled, unless tcp.smtp's ``var`` says otherwise."""
    if settings is None:
        return False
    value = env.get(var)
    if value is None:
        return settings.enabled
    return value not in ("", "0")


def unavailable(settings: ScannerSettings, facts: Facts, check: str, exc: Exception) -> Verdict:
    """The verdict when ``check``'s scanner gave none (``exc`` says why)."""
    if settings.on_unavailable == "tempfail":
        return Verdict(reply=SCANNER_DOWN, why=str(exc))
    log.warning("scan %s unavailable, accepting unscanned from %s: %s", check, facts.remote_ip, exc)
    return PASS
