"""Server side of the SASL mechanisms PLAIN, LOGIN and CRAM-MD5 as sans-IO state machines.

One :class:`SaslServer` runs one AUTH exchange, for SMTP (RFC 4954) and POP3 (RFC 5034 /
RFC 1734) alike: the driver feeds it the initial response and each client line and sends
whatever it answers. A :class:`Challenge` is the text after ``334 `` (SMTP) or ``+ `` (POP3);
credentials end the exchange and are what the client *claims* (the driver verifies them,
auth.verify); a :class:`Failure` ends it with qmail's exact 501 reply (spec 6.2), which a
POP3 driver maps to ``-ERR``.

Invariants:
- pure: no I/O, no clock, no randomness; the CRAM-MD5 challenge is made by the driver;
- :meth:`SaslServer.start` and :meth:`SaslServer.step` never raise for any client input:
  every malformed line is a Failure; calling them out of turn is a driver bug and raises
  :class:`SaslStateError`;
- decoded bytes become ``str`` with utf-8 ``surrogateescape`` (core.envelope), so they
  encode back to exactly the client's bytes.
"""

from __future__ import annotations

import base64
import binascii
import enum
from dataclasses import dataclass

from qtoaster.core.errors import ProtocolError
from qtoaster.core.reply import Reply

# spec 6.2, byte for byte (fehcom's spelling "canceled"; auth 0.31 wrote "cancelled").
CANCELED = Reply(501, "auth exchange canceled (#5.0.0)")
MALFORMED = Reply(501, "malformed auth input (#5.5.4)")
# The rest of spec 6.2's AUTH replies, for the SMTP driver.
AUTH_OK = Reply(235, "ok, go ahead (#2.0.0)")
AUTH_FAILED = Reply(535, "authentication failed (#5.7.1)")
ALREADY_AUTHENTICATED = Reply(503, "you're already authenticated (#5.5.0)")
AUTH_IN_TRANSACTION = Reply(503, "no auth during mail transaction (#5.5.0)")
AUTH_UNIMPLEMENTED = Reply(504, "auth type unimplemented (#5.5.1)")
AUTH_NOT_AVAILABLE = Reply(503, "auth not available (#5.3.3)")

# draft-murchison-sasl-login section 2: the prompts qmail sends, base64 of
# "Username:" and "Password:".
USERNAME_PROMPT = "VXNlcm5hbWU6"
PASSWORD_PROMPT = "UGFzc3dvcmQ6"


class Mechanism(enum.Enum):
    PLAIN = "PLAIN"
    LOGIN = "LOGIN"
    CRAM_MD5 = "CRAM-MD5"


@dataclass(frozen=True, slots=True)
class Challenge:
    text: str  # what follows "334 " (SMTP) or "+ " (POP3): base64, or "" for PLAIN


@dataclass(frozen=True, slots=True)
class PlainCredentials:
    """What a PLAIN or LOGIN client claims: a user name and its clear-text password."""

    user: str
    password: str


@dataclass(frozen=True, slots=True)
class CramCredentials:
    """A CRAM-MD5 answer: the user and its hex digest of ``challenge`` (RFC 2195)."""

    user: str
    digest: str
    challenge: bytes


@dataclass(frozen=True, slots=True)
class Failure:
    reply: Reply  # CANCELED or MALFORMED


Outcome = Challenge | PlainCredentials | CramCredentials | Failure


class SaslStateError(ProtocolError, RuntimeError):
    """The driver called start() twice, or step() before start() or after the end."""


class _State(enum.Enum):
    NEW = enum.auto()
    PLAIN_RESPONSE = enum.auto()  # PLAIN sent "334 ", waits for the one line
    LOGIN_USER = enum.auto()
    LOGIN_PASSWORD = enum.auto()
    CRAM_RESPONSE = enum.auto()
    DONE = enum.auto()


def parse_mechanism(name: str) -> Mechanism | None:
    """The mechanism named ``name`` in any case (spec 6.2), or None if we have none such."""
    # ASCII only: str.upper() maps e.g. the dotless "ı" to "I", so "plaın" is not PLAIN.
    if not name.isascii():
        return None
    try:
        return Mechanism(name.upper())
    except ValueError:
        return None


def cram_challenge(pid: int, when: int, host: str) -> bytes:
    """The CRAM-MD5 challenge ``<pid.when@host>`` (RFC 2195 section 2, spec 6.2 / 20)."""
    return f"<{pid}.{when}@{host}>".encode("utf-8", "surrogateescape")


def _decode(line: str) -> str | None:
    """The base64 text of ``line`` (utf-8, surrogateescape), or None if it is not base64.

    Strict RFC 4648 base64 (padding required, no whitespace), as qmail's b64decode."""
    try:
        raw = base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError):  # ValueError: a non-ASCII str
        return None
    return raw.decode("utf-8", "surrogateescape")


def _strip_line_end(line: str) -> str:
    """The line without its LF and CR (spec 6.2: "CR stripped")."""
    if line.endswith("\n"):
        line = line[:-1]
    if line.endswith("\r"):
        line = line[:-1]
    return line


def _split_plain(message: str) -> PlainCredentials | Failure:
    """RFC 4616 section 2: ``[authzid] NUL authcid NUL passwd``.

    The authzid is ignored, as qmail does (spec 6.2): the session's identity is always
    the authcid, so a client cannot act as another user by naming one; we do not refuse
    a differing authzid because qmail clients never saw that refused.
    """
    parts = message.split("\x00")
    if len(parts) != 3:
        return Failure(MALFORMED)
    _authzid, user, password = parts
    if not user or not password:
        return Failure(MALFORMED)
    return PlainCredentials(user, password)


def _split_cram(message: str, challenge: bytes) -> CramCredentials | Failure:
    """RFC 2195 section 2: ``user SP digest``.

    Split at the LAST space: RFC 2195 lets the user name contain spaces, the hex digest
    cannot. qmail splits at the first space and skips further spaces before the digest
    (spec 20); trimming the user's trailing spaces gives the same result for every answer
    whose user has no space.
    """
    user, space, digest = message.rpartition(" ")
    user = user.rstrip(" ")
    if not space or not user or not digest:
        return Failure(MALFORMED)
    return CramCredentials(user, digest, challenge)


class SaslServer:
    """One AUTH exchange: ``start`` once, then ``step`` for each client line while the
    last answer was a :class:`Challenge`."""

    def __init__(self, mechanism: Mechanism, *, cram_challenge: bytes | None = None) -> None:
        if mechanism is Mechanism.CRAM_MD5 and not cram_challenge:
            raise ValueError("CRAM-MD5 needs the challenge the driver made (spec 6.2)")
        self.mechanism = mechanism
        self._challenge = cram_challenge or b""
        self._state = _State.NEW
        self._user = ""

    @property
    def done(self) -> bool:
        """Whether the exchange has ended (credentials or a failure were answered)."""
        return self._state is _State.DONE

    def start(self, initial_response: str | None) -> Outcome:
        """Begin with the AUTH command's initial response (None or "" if it had none).

        RFC 4954 section 4: a lone ``=`` is an empty initial response.
        """
        if self._state is not _State.NEW:
            raise SaslStateError("start() called twice")
        if initial_response == "":
            initial_response = None
        if self.mechanism is Mechanism.CRAM_MD5:
            if initial_response is not None:
                # RFC 4954 section 4: an initial response to a server-first mechanism
                # MUST be rejected with a 501 (qmail would ignore it).
                return self._end(Failure(MALFORMED))
            self._state = _State.CRAM_RESPONSE
            return Challenge(base64.b64encode(self._challenge).decode("ascii"))
        if initial_response is None:
            if self.mechanism is Mechanism.PLAIN:
                self._state = _State.PLAIN_RESPONSE
                return Challenge("")
            self._state = _State.LOGIN_USER
            return Challenge(USERNAME_PROMPT)
        # An initial response is base64 like any later line, but "*" there is no cancel:
        # there is no exchange yet to cancel, so it is malformed base64.
        decoded = "" if initial_response == "=" else _decode(initial_response)
        if self.mechanism is Mechanism.PLAIN:
            return self._plain(decoded)
        return self._login_user(decoded)

    def step(self, line: str) -> Outcome:
        """Answer one client line of the exchange (its CR LF may still be attached)."""
        state = self._state
        if state in (_State.NEW, _State.DONE):
            raise SaslStateError(f"step() in state {state.name}")
        line = _strip_line_end(line)
        if line == "*":  # RFC 4954 section 4: the client cancels
            return self._end(Failure(CANCELED))
        decoded = _decode(line) if line else None  # spec 6.2: an empty line is malformed
        if state is _State.PLAIN_RESPONSE:
            return self._plain(decoded)
        if state is _State.LOGIN_USER:
            return self._login_user(decoded)
        if state is _State.LOGIN_PASSWORD:
            if not decoded:
                return self._end(Failure(MALFORMED))
            return self._end(PlainCredentials(self._user, decoded))
        if decoded is None:
            return self._end(Failure(MALFORMED))
        return self._end(_split_cram(decoded, self._challenge))

    def _plain(self, decoded: str | None) -> Outcome:
        if decoded is None:
            return self._end(Failure(MALFORMED))
        return self._end(_split_plain(decoded))

    def _login_user(self, decoded: str | None) -> Outcome:
        if not decoded:
            return self._end(Failure(MALFORMED))
        self._user = decoded
        self._state = _State.LOGIN_PASSWORD
        return Challenge(PASSWORD_PROMPT)

    def _end(self, outcome: Outcome) -> Outcome:
        self._state = _State.DONE
        return outcome
