"""The IMAP connection states (RFC 9051 3) and which commands each one allows.

The session sets :attr:`server.ImapConnection.state` (after a login, SELECT, CLOSE,
LOGOUT); the engine refuses by itself, with ``tag BAD``, a command the current state does
not allow, with Dovecot's texts where Dovecot has one:

- not authenticated, a command that needs a login: ``BAD Not authenticated.``
- authenticated, a command that needs a selected mailbox: ``BAD No mailbox selected.``
  (Dovecot's client_verify_open_mailbox)
- authenticated, LOGIN / AUTHENTICATE / STARTTLS: ``BAD Already authenticated.``

Invariant: every command name the parser knows (parser.COMMAND_NAMES) is in exactly one of
the sets below (tests/protocols/test_imap_states.py checks it).
"""

from __future__ import annotations

import enum
from typing import Final

from qtoaster.core.errors import ProtocolError


class State(enum.Enum):
    NOT_AUTHENTICATED = "not-authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"  # nothing more is read; the session closes

    __hash__ = object.__hash__  # identity hash at C speed (as pop3/states.py)


class ImapProtocolError(ProtocolError):
    """The session used the engine wrongly (e.g. start_idle() with no IDLE to answer)."""


ANY_STATE: Final = frozenset(("CAPABILITY", "NOOP", "LOGOUT", "ID"))
NOT_AUTHENTICATED_ONLY: Final = frozenset(("STARTTLS", "LOGIN", "AUTHENTICATE"))
AUTHENTICATED: Final = frozenset(
    (
        "ENABLE",
        "COMPRESS",
        "SELECT",
        "EXAMINE",
        "CREATE",
        "DELETE",
        "RENAME",
        "SUBSCRIBE",
        "UNSUBSCRIBE",
        "LIST",
        "LSUB",
        "NAMESPACE",
        "STATUS",
        "APPEND",
        "IDLE",
        "GETQUOTA",
        "GETQUOTAROOT",
    )
)
SELECTED_ONLY: Final = frozenset(
    (
        "CHECK",
        "CLOSE",
        "UNSELECT",
        "EXPUNGE",
        "SEARCH",
        "FETCH",
        "STORE",
        "COPY",
        "MOVE",
        "UID COPY",
        "UID MOVE",
        "UID FETCH",
        "UID SEARCH",
        "UID STORE",
        "UID EXPUNGE",
    )
)

NOT_AUTHENTICATED_TEXT: Final = "Not authenticated."
NO_MAILBOX_TEXT: Final = "No mailbox selected."
ALREADY_AUTHENTICATED_TEXT: Final = "Already authenticated."


def refusal(name: str, state: State) -> str | None:
    """The BAD text for command ``name`` in ``state``, None when it is allowed."""
    if name in ANY_STATE:
        return None
    if state is State.NOT_AUTHENTICATED:
        return None if name in NOT_AUTHENTICATED_ONLY else NOT_AUTHENTICATED_TEXT
    if name in NOT_AUTHENTICATED_ONLY:
        return ALREADY_AUTHENTICATED_TEXT
    if state is State.AUTHENTICATED and name in SELECTED_ONLY:
        return NO_MAILBOX_TEXT
    return None
