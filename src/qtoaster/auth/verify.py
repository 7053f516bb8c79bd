"""Check what a SASL exchange proved against the directory; which mechanisms to offer.

vchkpw's job (spec 6.2, 19.4): PLAIN and LOGIN carry a clear-text password checked against
the argon2 hash; CRAM-MD5 carries HMAC-MD5(password, challenge) checked against the
``{CRAM-MD5}`` contexts a user keeps only when secrets are opted in (directory.secrets).
A user name without ``@`` gets the default domain, as vpopmail appends it.

Invariants:
- the password or digest is always checked before the account's flags are looked at, so
  an answer takes as long for a refused account as for a wrong password, and ``reason``
  (for logs only, never for the client) is the one thing that tells them apart;
- nothing here raises for client input; a directory outage propagates as the directory's
  TemporaryFailure (DirectoryUnavailable), which the driver answers with a 4xx / ``-ERR``;
- blocking: argon2 and database calls. The auth role (qtoaster.authd), the only process
  that runs these checks, runs them in an executor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from qtoaster.auth.mechanisms import mechanisms_for
from qtoaster.directory.schema import UserFlag
from qtoaster.directory.secrets import verify_apop, verify_cram_md5
from qtoaster.protocols.sasl import CramCredentials, PlainCredentials

__all__ = ["AuthResult", "login_address", "mechanisms_for", "verify", "verify_apop_login"]

# Which flag refuses a login on each service (vpopmail's pw_gid bits, spec 22).
_REFUSING_FLAG = {
    "smtp": UserFlag.NO_SMTP_AUTH,
    "pop3": UserFlag.NO_POP,
    "imap": UserFlag.NO_IMAP,
    # The web admin (docs/http.md): vpopmail has no flag for it; DISABLED refuses it as
    # it refuses every login.
    "http": UserFlag.DISABLED,
}
# Well-formed contexts no password gives (all zero chaining values), to verify against.
_DUMMY_CONTEXTS = "0" * 64


class UserLike(Protocol):
    @property
    def address(self) -> str: ...

    @property
    def flags(self) -> UserFlag: ...


class LoginDirectory(Protocol):
    """The part of directory.store.Directory that login needs."""

    def verify_password(self, address: str, password: str) -> bool: ...

    def auth_secrets(self, address: str) -> tuple[str | None, str | None]: ...

    def user(self, address: str) -> UserLike | None: ...


_NO_FLAGS = UserFlag(0)


@dataclass(frozen=True, slots=True)
class AuthResult:
    ok: bool
    user: str  # the address tried (default domain added); the canonical address on success
    reason: str  # for the log, never sent to the client
    flags: UserFlag = _NO_FLAGS  # the user's, on success (NO_RELAY: AUTH does not relay)


def login_address(user: str, default_domain: str | None) -> str | None:
    """The address ``user`` logs in as: itself if it has an ``@``, else ``user@default``;
    None without a default domain."""
    if "@" in user:
        return user
    if not default_domain:
        return None
    return f"{user}@{default_domain}"


def verify(
    directory: LoginDirectory,
    credentials: PlainCredentials | CramCredentials,
    *,
    service: str,
    default_domain: str | None = None,
) -> AuthResult:
    """Whether ``credentials`` log in to ``service`` ("smtp", "pop3", "imap" or "http").

    Pass :attr:`AuthResult.user` to the throttle as the account, so ``tim`` and
    ``tim@default.domain`` count as one.
    """
    refusing = _REFUSING_FLAG.get(service)
    if refusing is None:
        raise ValueError(f"unknown service {service!r} (smtp, pop3, imap or http)")
    address = login_address(credentials.user, default_domain)
    if address is None:
        return AuthResult(False, credentials.user, "no domain and no default domain")
    if isinstance(credentials, PlainCredentials):
        proved = directory.verify_password(address, credentials.password)
        what = "password"
    else:
        contexts, _apop = directory.auth_secrets(address)
        # Unknown and DISABLED users have no secrets either; compute a digest all the same
        # so that the answer's timing does not tell them apart.
        matches = verify_cram_md5(
            contexts or _DUMMY_CONTEXTS, credentials.challenge, credentials.digest
        )
        if contexts is None:
            return AuthResult(False, address, "no CRAM-MD5 secret kept (or unknown user)")
        proved = matches
        what = "CRAM-MD5 digest"
    if not proved:
        # verify_password answers False alike for unknown, password-less, DISABLED users.
        return AuthResult(False, address, f"wrong {what} or unknown user")
    info = directory.user(address)
    if info is None:  # deleted between the two queries
        return AuthResult(False, address, "unknown user")
    if info.flags & UserFlag.DISABLED:
        return AuthResult(False, info.address, "account disabled")
    if info.flags & refusing:
        return AuthResult(False, info.address, f"{refusing.name} set for this user")
    return AuthResult(True, info.address, f"{what} ok", UserFlag(info.flags))


def verify_apop_login(
    directory: LoginDirectory, name: str, banner: str, digest: str, default_domain: str | None
) -> AuthResult:
    """Whether APOP ``name digest`` proves the account for the POP3 ``banner`` (RFC 1939 7)."""
    address = login_address(name, default_domain) or name
    _cram, secret = directory.auth_secrets(address)
    user = directory.user(address)
    ok = secret is not None and verify_apop(banner, secret, digest)
    if ok and user is not None and user.flags & UserFlag.NO_POP:
        return AuthResult(False, address, "POP disabled")
    if ok and user is not None:
        return AuthResult(True, address, "APOP", UserFlag(user.flags))  # as tried, as before
    return AuthResult(False, address, "APOP")
