"""The checks of a message's content, at DATA: control/signatures while the message streams
in, then clamd and spamd once it is spooled, before the queue's commit (spec 4, 11; issue 7).

One :class:`ContentChecks` per message.  ``feed`` sees every DataChunk (LF line ends,
dot-stuffing undone) and costs only the signature scanner's work; ``verdict`` runs after
the final dot, on the spooled file, and returns the reply that refuses the message, or
None to queue it (possibly after adding spamd's headers to the spool).

Order after the final dot: databytes and hop count (the session, first), signatures
(552), clamd (554), spamd (headers; 554 at or above reject_score).  Each refusal is one
log line naming stage, check, client, HELO, sender, recipients and the reply.

Invariants: a scanner that is down or slow never loses the message: it is accepted
unscanned (and logged) or refused with 451, as ``on_unavailable`` says; the spool is only
read, except for the headers spamd adds at the top of the message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from qtoaster.config.settings import ScannerSettings
from qtoaster.core.reply import Reply
from qtoaster.policy.signatures import EXECUTABLE, Scanner, Signatures, disabled_by
from qtoaster.queue.store import Spool

log = logging.getLogger("qtoaster.policy")

VIRUS = Reply(554, "sorry, this message contains a virus (#5.7.1)")
SPAM = Reply(554, "sorry, this message looks like spam (#5.7.1)")
SCANNER_DOWN = Reply(451, "temporary failure scanning the message; try again later (#4.3.0)")


@dataclass(frozen=True, slots=True)
class Who:
    """What the log line of a refusal names."""

    session: str
    client: str
    helo: str | None
    sender: str
    recipients: tuple[str, ...]


def switched_on(settings: ScannerSettings | None, env: Mapping[str, str], var: str) -> bool:
    """A scanner runs when configured and enabled, unless tcp.smtp's ``var`` says otherwise."""
    if settings is None:
        return False
    value = env.get(var)
    if value is None:
        return settings.enabled
    return value not in ("", "0")


class ContentChecks:
    def __init__(
        self,
        signatures: Signatures | None,
        clamd: ScannerSettings | None,
        spamd: ScannerSettings | None,
        env: Mapping[str, str],
        me: str,
    ) -> None:
        self._scanner: Scanner | None = None
        if signatures is not None and not disabled_by(env):
            self._scanner = signatures.scanner()
        self._clamd = clamd if switched_on(clamd, env, "CLAMD") else None
        self._spamd = spamd if switched_on(spamd, env, "SPAMD") else None
        self._me = me

    @property
    def idle(self) -> bool:
        """Nothing to do for this message (the common, fast case)."""
        return self._scanner is None and self._clamd is None and self._spamd is None

    def feed(self, data: bytes) -> None:
        if self._scanner is not None and not self._scanner.found:
            self._scanner.feed(data)

    @property
    def waits(self) -> bool:
        """The verdict needs I/O (a scanner daemon), not just the signature result."""
        return self._clamd is not None or self._spamd is not None

    def executable(self, who: Who) -> Reply | None:
        if self._scanner is not None and self._scanner.found:
            return _refused(who, "signatures", EXECUTABLE, "executable content")
        return None

    async def verdict(self, spool: Spool, who: Who) -> Reply | None:
        """clamd then spamd on the spooled message; None: queue it."""
        refused = self.executable(who)
        if refused is not None:
            return refused
        if self._clamd is None and self._spamd is None:
            return None
        await asyncio.to_thread(spool.flush)
        if self._clamd is not None:
            refused = await self._virus(self._clamd, spool, who)
            if refused is not None:
                return refused
        if self._spamd is not None:
            return await self._spam(self._spamd, spool, who)
        return None

    async def _virus(self, settings: ScannerSettings, spool: Spool, who: Who) -> Reply | None:
        from qtoaster.scanners import ScannerUnavailable
        from qtoaster.scanners.clamd import clamd_scan

        try:
            result = await clamd_scan(
                settings.address,
                spool.path,
                spool.body_offset,
                timeout=settings.timeout,
                max_bytes=settings.max_bytes,
            )
        except ScannerUnavailable as exc:
            return _unavailable(settings, who, "clamd", exc)
        if result.infected:
            return _refused(who, "clamd", VIRUS, f"virus {result.virus}")
        return None

    async def _spam(self, settings: ScannerSettings, spool: Spool, who: Who) -> Reply | None:
        from qtoaster.scanners import ScannerUnavailable
        from qtoaster.scanners.spamd import SpamdTooBig, spam_headers, spamd_check

        try:
            result = await spamd_check(
                settings.address,
                spool.path,
                spool.body_offset,
                timeout=settings.timeout,
                max_bytes=settings.max_bytes,
            )
        except SpamdTooBig as exc:
            log.info("%s spamd: not scored, %s", who.session, exc)
            return None
        except ScannerUnavailable as exc:
            return _unavailable(settings, who, "spamd", exc)
        if settings.reject_score and result.score >= settings.reject_score:
            return _refused(who, "spamd", SPAM, f"score {result.score:.1f}")
        await asyncio.to_thread(spool.insert_before_message, spam_headers(result, self._me))
        return None


def _unavailable(settings: ScannerSettings, who: Who, check: str, exc: Exception) -> Reply | None:
    if settings.on_unavailable == "tempfail":
        return _refused(who, check, SCANNER_DOWN, str(exc))
    log.warning("%s %s unavailable, accepting unscanned: %s", who.session, check, exc)
    return None


def _refused(who: Who, check: str, reply: Reply, why: str) -> Reply:
    log.info(
        "%s reject stage=data check=%s client=%s helo=%s from=<%s> to=<%s> reply=%r (%s)",
        who.session,
        check,
        who.client,
        who.helo,
        who.sender,
        ",".join(who.recipients),
        reply.render().decode(errors="replace"),
        why,
    )
    return reply
