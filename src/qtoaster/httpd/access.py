"""Who is asking and what they may touch: the http role's three kinds of login.

- ``site``: every domain, the queue, the server status (a site token, or a login of an
  address in ``[http] admins``);
- ``domain``: one domain's users, aliases and catch-all (a domain token, or the login of
  that domain's ``postmaster@``, as qmailadmin had it);
- ``user``: its own user (password) and its own forwards, nothing else.

Sessions live in this process's memory only (a restart logs everyone out): a random
32-byte id in a Secure, HttpOnly, SameSite=Strict cookie, and a per-session CSRF token
that every unsafe request authenticated by that cookie must repeat in ``X-CSRF-Token``.

Invariants: a refusal is an :class:`~qtoaster.httpd.channel.OpError` (401 without a login,
403 outside the login's scope); addresses and domains are compared lower-cased.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field

from qtoaster.httpd.channel import OpError

SESSION_SECONDS = 8 * 3600
MAX_SESSIONS = 10000


@dataclass(frozen=True, slots=True)
class Principal:
    kind: str  # "site", "domain" or "user"
    name: str  # the login's address or "token:NAME"
    domain: str | None = None  # the domain of a domain admin or a user

    def may_site(self) -> None:
        if self.kind != "site":
            raise OpError(403, "this needs a site administrator")

    def may_domain(self, domain: str) -> None:
        if self.kind == "site":
            return
        if self.kind == "domain" and self.domain == domain.lower():
            return
        raise OpError(403, f"not yours: domain {domain.lower()}")

    def may_administer(self, domain: str) -> None:
        """Administer ``domain``'s users and aliases (a user: never, not even its own)."""
        if self.kind == "user":
            raise OpError(403, "this needs a site or domain administrator")
        self.may_domain(domain)

    def may_user(self, address: str) -> None:
        """Read or change one user (a user: only itself)."""
        if self.kind == "user":
            if self.name != address.lower():
                raise OpError(403, f"not yours: user {address.lower()}")
            return
        self.may_domain(address.rpartition("@")[2])


def principal_for_login(address: str, admins: tuple[str, ...]) -> Principal:
    """The kind of a password login that the auth role accepted."""
    address = address.lower()
    local, _, domain = address.rpartition("@")
    if address in admins:
        return Principal("site", address)
    if local == "postmaster":
        return Principal("domain", address, domain)
    return Principal("user", address, domain)


def principal_for_token(name: str, scope: str) -> Principal:
    if scope == "site":
        return Principal("site", f"token:{name}")
    return Principal("domain", f"token:{name}", scope)


@dataclass(slots=True)
class Session:
    principal: Principal
    csrf: str
    expires: float


@dataclass
class Sessions:
    by_id: dict[str, Session] = field(default_factory=dict)

    def open(self, principal: Principal) -> tuple[str, Session]:
        now = time.monotonic()
        if len(self.by_id) >= MAX_SESSIONS:
            self.by_id = {k: s for k, s in self.by_id.items() if s.expires > now}
            while len(self.by_id) >= MAX_SESSIONS:
                del self.by_id[next(iter(self.by_id))]
        sid = secrets.token_urlsafe(32)
        session = Session(principal, secrets.token_urlsafe(32), now + SESSION_SECONDS)
        self.by_id[sid] = session
        return sid, session

    def get(self, sid: str) -> Session | None:
        session = self.by_id.get(sid)
        if session is None or session.expires < time.monotonic():
            self.by_id.pop(sid, None)
            return None
        return session

    def close(self, sid: str) -> None:
        self.by_id.pop(sid, None)


def csrf_ok(session: Session, sent: str | None) -> bool:
    return sent is not None and hmac.compare_digest(session.csrf.encode(), sent.encode())
