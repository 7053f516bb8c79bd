"""srs: a recipient that is an SRS address of a domain delivered here must be one we made
(docs/srs.md): a bounce of a forwarded message. Forged or expired ones are refused at
RCPT, so no one can use our SRS addresses to relay through us.

The address is kept as it is (the queue holds the SRS address); the send role's local
delivery reverses it and sends the mail on. chkuser, which comes after this check,
accepts an SRS local part in a local domain without looking for such a user
(``Chkuser(srs=True)``), because this check has already vouched for it.

Invariants: the key is never read here: ``reverse`` asks whoever holds it (the auth role
under root); a failure to ask is temporary (451), never an acceptance.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor

from qtoaster.core.envelope import split_address
from qtoaster.core.errors import TemporaryFailure
from qtoaster.core.reply import Reply
from qtoaster.mailauth.srs import SrsError, is_srs
from qtoaster.policy.verdict import PASS, Facts, SessionState, Stage, Verdict

INVALID = Reply(550, "sorry, invalid SRS address (#5.1.1)")
UNAVAILABLE = Reply(451, "unable to check the SRS address now, try again later (#4.3.0)")

# The address an SRS address was made from; SrsError or TemporaryFailure.
Reverser = Callable[[str], Awaitable[str]]


class SrsCheck:
    name = "srs"
    stages = frozenset({Stage.RCPT})

    def __init__(
        self, reverse: Reverser, local_domain: Callable[[str], bool], executor: Executor
    ) -> None:
        """``local_domain``: whether mail for a domain is delivered here (may block:
        it runs in ``executor``)."""
        self._reverse = reverse
        self._local_domain = local_domain
        self._executor = executor

    def check(
        self, stage: Stage, facts: Facts, state: SessionState
    ) -> Verdict | Awaitable[Verdict]:
        assert facts.recipient is not None
        local, domain = split_address(facts.recipient)
        if not domain or not is_srs(local):
            return PASS
        return self._checked(facts.recipient, domain)

    async def _checked(self, address: str, domain: str) -> Verdict:
        loop = asyncio.get_running_loop()
        try:
            if not await loop.run_in_executor(self._executor, self._local_domain, domain):
                return PASS  # another server's SRS address (we relay or back it up)
            await self._reverse(address)
        except SrsError as exc:
            return Verdict(reply=INVALID, why=exc.reason)
        except TemporaryFailure as exc:
            return Verdict(reply=UNAVAILABLE, why=str(exc))
        return PASS
