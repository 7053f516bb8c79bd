"""states.py: every command the parser knows is in exactly one state set, and refusal()
allows each command exactly in the states RFC 9051 3 gives it."""

from __future__ import annotations

from qtoaster.protocols.imap import states
from qtoaster.protocols.imap.parser import COMMAND_NAMES
from qtoaster.protocols.imap.states import State, refusal

SETS = (
    states.ANY_STATE,
    states.NOT_AUTHENTICATED_ONLY,
    states.AUTHENTICATED,
    states.SELECTED_ONLY,
)


def test_every_command_in_exactly_one_set() -> None:
    for name in COMMAND_NAMES:
        assert sum(name in s for s in SETS) == 1, name
    assert frozenset().union(*SETS) == COMMAND_NAMES


def test_refusals() -> None:
    na, auth, sel = State.NOT_AUTHENTICATED, State.AUTHENTICATED, State.SELECTED
    for name in COMMAND_NAMES:
        allowed = {s for s in (na, auth, sel) if refusal(name, s) is None}
        if name in states.ANY_STATE:
            assert allowed == {na, auth, sel}
        elif name in states.NOT_AUTHENTICATED_ONLY:
            assert allowed == {na}
        elif name in states.AUTHENTICATED:
            assert allowed == {auth, sel}
        else:
            assert allowed == {sel}
    assert refusal("FETCH", auth) == "No mailbox selected."
    assert refusal("FETCH", na) == "Not authenticated."
    assert refusal("LOGIN", sel) == "Already authenticated."
