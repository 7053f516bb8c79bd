"""The settings of the IMAP role (issue 15): ``[imapd]`` of qtoaster.toml, typed and checked
as ``config/settings.py`` does the rest (docs/configuration.md, docs/imap.md).

Invariants: as settings.py's: every key known, typed and within bounds, or a problem
recorded in the :class:`~qtoaster.config.tables.Tables`; absent keys take the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

from qtoaster.config.tables import Tables, int_between, is_bool

MAX_WORKERS = 256
# RFC 9051 5.4: the autologout timer of an authenticated session must be at least 30
# minutes; an IDLE client re-issues IDLE at least every 29 minutes (RFC 2177 3).
THIRTY_MINUTES = 1800
# APPENDLIMIT (RFC 7889): the engine holds an APPEND's literal in memory, so this bounds a
# session's memory as much as the message size. 50 MiB is above what the big providers
# accept for a message they send (Gmail 25 MB of attachments, Outlook about 35 MB once
# base64-encoded), so a copy of any sent message fits into Sent, and 2 sessions x 2
# workers x 50 MiB stays well within a small server's memory.
DEFAULT_MAX_LITERAL = 50 << 20
# The longest command line outside literals. RFC 7162 3.2.1 asks clients to keep lines
# under 8192 octets and servers to accept at least that; long UID sets (a client syncing
# a big folder) come near it, so 64 KiB as Dovecot's imap_max_line_length.
DEFAULT_MAX_LINE = 64 << 10


@dataclass(frozen=True, slots=True)
class ImapSettings:
    """[imapd]: the IMAP role's workers, timeouts and limits."""

    workers: int = 0  # 0: two per core, as pop3d (long sessions spread unevenly)
    timeout: int = THIRTY_MINUTES  # seconds without a command before autologout
    idle_timeout: int = THIRTY_MINUTES  # seconds an IDLE may last without DONE
    # LOGIN / AUTHENTICATE PLAIN and LOGIN without TLS; default: [auth] allow_plaintext
    allow_plaintext_login: bool = False
    max_literal: int = DEFAULT_MAX_LITERAL  # APPENDLIMIT, and any one literal
    max_line: int = DEFAULT_MAX_LINE  # a command line outside its literals


def imap_settings(tables: Tables, allow_plaintext: bool) -> ImapSettings:
    """``[imapd]``; ``allow_plaintext`` is ``[auth] allow_plaintext``, the default of
    ``allow_plaintext_login`` (one switch for SMTP, POP3 and IMAP unless IMAP's is set)."""
    return ImapSettings(
        workers=tables.get("imapd", "workers", int_between(0, MAX_WORKERS), 0),
        timeout=tables.get("imapd", "timeout", int_between(1, 86400), THIRTY_MINUTES),
        idle_timeout=tables.get("imapd", "idle_timeout", int_between(1, 86400), THIRTY_MINUTES),
        allow_plaintext_login=tables.get(
            "imapd", "allow_plaintext_login", is_bool, allow_plaintext
        ),
        max_literal=tables.get(
            "imapd", "max_literal", int_between(64 << 10, 1 << 30), DEFAULT_MAX_LITERAL
        ),
        max_line=tables.get("imapd", "max_line", int_between(8192, 1 << 20), DEFAULT_MAX_LINE),
    )
