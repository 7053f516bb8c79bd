"""The fields of the ``login.ok`` / ``login.failed`` lines (docs/logging.md), one shape for
SMTP AUTH, POP3 and IMAP so that ``qtoaster report`` reads them alike."""

from __future__ import annotations

import asyncio

from qtoaster.core.logfields import fields
from qtoaster.net.driver import tls_version


def login_fields(
    service: str,
    session: str,
    user: str | None,
    client: str,
    transport: asyncio.BaseTransport | None,
    reason: str | None = None,
) -> str:
    """``service=... session=... user=... client=... tls=...`` (and ``reason=`` on failures)."""
    return fields(
        service=service,
        session=session,
        user=user,
        client=client,
        tls=tls_version(transport),
        reason=reason,
    )
