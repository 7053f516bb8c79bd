"""Users of the directory: add (one or in bulk), delete, passwords, quotas, flags, secrets.

vpopmail's vadduser/vdeluser/vpasswd/vsetuserquota/vmoduser (spec 22).  A user's Maildir
is created with the user, in the same transaction: if it cannot be made, nobody is added.

Credentials go to the credential store (credentials.py), written and committed inside the
directory's transaction just before it commits; the users table gets has_password and
has_secrets.  Adding a user always writes its credential row (NULLs if it has none), so a
row left by a crash for a user that was never committed cannot outlive the next add.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import Row, func, select
from sqlalchemy.exc import IntegrityError

from qtoaster.core.domain import local_key
from qtoaster.core.envelope import split_address
from qtoaster.directory import credentials, passwords
from qtoaster.directory.base import (
    NO_FLAGS,
    UNSET,
    DirectoryBase,
    NewUser,
    _address,
    candidates,
    database_errors,
    non_negative,
)
from qtoaster.directory.credentials import Credential
from qtoaster.directory.model import (
    DirectoryError,
    UserInfo,
    valid_address,
)
from qtoaster.directory.schema import UserFlag, aliases, domains, users
from qtoaster.maildir.create import make_maildir, remove_empty_maildir


class UserOps(DirectoryBase):
    # -- users -----------------------------------------------------------------------

    def add_user(
        self,
        address: str,
        password: str | None,
        quota: int | None = None,
        *,
        password_hash: str | None = None,
        quota_messages: int | None = None,
        flags: UserFlag = NO_FLAGS,
    ) -> None:
        """Add a user and create its Maildir (0700); ``quota`` None = the domain's default.

        ``password_hash`` stores an existing hash (an import) instead of hashing
        ``password``; secrets for CRAM-MD5/APOP are kept if the domain asks for them.
        """
        if password is not None and password_hash is not None:
            raise DirectoryError("give a password or a password hash, not both")
        if password is not None:
            password_hash = passwords.hash_password(password)
        self.add_users(
            [NewUser(address, password_hash, quota, quota_messages, flags)],
            password=password,
        )

    def add_users(self, new: Iterable[NewUser], *, password: str | None = None) -> int:
        """Add users in one transaction (all or none) and create their Maildirs.

        ``password`` (one user only) lets the domain's secrets be derived from it.
        """
        count = 0
        made: list[Path] = []
        stored: list[tuple[int, str, Credential]] = []
        try:
            with self._write() as conn:
                rows: dict[str, Row[Any]] = {}
                room: dict[str, int | None] = {}
                for entry in new:
                    local, domain = valid_address(entry.address)
                    if domain not in rows:
                        rows[domain] = row = self._domain_row(conn, domain)
                        if row.alias_of is not None:
                            raise DirectoryError(
                                f"domain {domain} is an alias; add the user to its target"
                            )
                        room[domain] = self._room(conn, row)
                    row = rows[domain]
                    left = room[domain]
                    if left is not None:
                        if left <= 0:
                            raise DirectoryError(f"domain {domain} has its maximum of users")
                        room[domain] = left - 1
                    maildir = self._home.maildir(domain, local)
                    credential = self._credential(entry.password_hash, password, bool(row.secrets))
                    values = dict(
                        domain_id=row.id,
                        local_part=local,
                        has_password=credential.password_hash is not None,
                        has_secrets=credential.cram_md5 is not None,
                        quota=non_negative("quota", entry.quota)
                        if entry.quota is not None
                        else row.default_quota,
                        quota_messages=non_negative("quota", entry.quota_messages),
                        flags=int(entry.flags),
                        maildir=str(maildir.relative_to(self._home.root)),
                        created=self._now(),
                    )
                    try:
                        with conn.begin_nested():
                            result = conn.execute(users.insert().values(**values))
                    except IntegrityError as exc:
                        raise DirectoryError(f"user {local}@{domain} already exists") from exc
                    key = result.inserted_primary_key
                    assert key is not None
                    user_id = int(key[0])
                    stored.append((user_id, f"{local}@{row.name}", credential))
                    # Inside the transaction: if a Maildir cannot be made, nobody is added.
                    try:
                        if make_maildir(maildir):
                            made.append(maildir)
                    except OSError as exc:
                        raise DirectoryError(f"cannot create {maildir}: {exc.strerror}") from exc
                    count += 1
                if stored:
                    with self._credentials().writing(conn) as target:
                        credentials.put(target, stored)
        except BaseException:
            for maildir in made:  # only the Maildirs this call created, still empty
                remove_empty_maildir(maildir)
            raise
        return count

    def delete_user(self, address: str) -> None:
        """Remove the user and the aliases of its address (not its files)."""
        local, domain = split_address(address)
        with self._write() as conn:
            real_id = self._real_domain_id(conn, domain)
            user_id = conn.execute(
                select(users.c.id).where(
                    users.c.domain_id == real_id, users.c.local_part == local_key(local)
                )
            ).scalar()
            if user_id is None:
                raise DirectoryError(f"unknown user: {address}")
            conn.execute(users.delete().where(users.c.id == user_id))
            with self._credentials().writing(conn) as target:
                credentials.delete(target, [int(user_id)])
            # As vdeluser: the address's own forwards go with it.
            conn.execute(
                aliases.delete().where(
                    aliases.c.domain_id == real_id, aliases.c.local_part == local_key(local)
                )
            )

    def set_password(self, address: str, password: str | None) -> None:
        """Set (or with None remove) the password; secrets follow the user's choice."""
        password_hash = None if password is None else passwords.hash_password(password)
        with self._write() as conn:
            row = self._user_row(conn, address)
            credential = self._credential(password_hash, password, self._wants_secrets(conn, row))
            conn.execute(
                users.update()
                .where(users.c.id == row.id)
                .values(
                    has_password=password_hash is not None,
                    has_secrets=credential.cram_md5 is not None,
                )
            )
            with self._credentials().writing(conn) as target:
                credentials.put(target, [(int(row.id), _address(row), credential)])

    def set_user(
        self,
        address: str,
        *,
        quota: Any = UNSET,
        quota_messages: Any = UNSET,
        add_flags: UserFlag = NO_FLAGS,
        clear_flags: UserFlag = NO_FLAGS,
        secrets: Any = UNSET,
        junk_spam: Any = UNSET,
    ) -> UserInfo:
        """Change a user's quota, flags, secrets choice or spam folder choice (``junk_spam``:
        True files mail the spam scanner marked into .Junk); the updated user.

        Turning secrets off forgets the stored ones at once; turning them on takes effect
        at the next password change (the server never knows the password otherwise)."""
        values: dict[str, Any] = {}
        if quota is not UNSET:
            values["quota"] = non_negative("quota", quota)
        if quota_messages is not UNSET:
            values["quota_messages"] = non_negative("quota", quota_messages)
        if secrets is not UNSET:
            values["secrets"] = secrets
        if junk_spam is not UNSET:
            values["junk_spam"] = bool(junk_spam)
        with self._write() as conn:
            row = self._user_row(conn, address)
            flags = (UserFlag(row.flags) | add_flags) & ~clear_flags
            values["flags"] = int(flags)
            conn.execute(users.update().where(users.c.id == row.id).values(**values))
            if (
                secrets is not UNSET
                and row.has_secrets
                and not self._wants_secrets(conn, self._user_row(conn, address))
            ):
                conn.execute(users.update().where(users.c.id == row.id).values(has_secrets=False))
                with self._credentials().writing(conn) as target:
                    credentials.update(target, int(row.id), cram_md5=None, apop_secret=None)
        info = self.user(address)
        assert info is not None
        return info

    def users(self, domain: str | None = None) -> list[UserInfo]:
        """Every user (of ``domain`` if given; DirectoryError if it is unknown), sorted."""
        query = select(users, domains.c.name.label("domain_name")).join(
            domains, users.c.domain_id == domains.c.id
        )
        with database_errors(), self._engine.connect() as conn:
            if domain is not None:
                real_id = self._real_domain_id(conn, domain)
                query = query.where(domains.c.id == real_id)
            rows = conn.execute(query.order_by(domains.c.name, users.c.local_part)).all()
        return [self._info(row) for row in rows]

    def user_page(
        self, domain: str, *, search: str = "", offset: int = 0, limit: int = 50
    ) -> tuple[int, list[UserInfo]]:
        """One page of ``domain``'s users by local part (those containing ``search``) and
        how many match in all: two queries on the (domain_id, local_part) index, so a
        page of a domain of 10,000 users costs what a page of 10 does (the web admin's
        lists; DirectoryError for an unknown domain)."""
        with database_errors(), self._engine.connect() as conn:
            real_id = self._real_domain_id(conn, domain)
            where = [users.c.domain_id == real_id]
            if search:
                pattern = search.lower().replace("\\", "\\\\").replace("%", "\\%")
                pattern = pattern.replace("_", "\\_")
                where.append(users.c.local_part.like(f"%{pattern}%", escape="\\"))
            total = conn.execute(select(func.count()).select_from(users).where(*where)).scalar()
            rows = conn.execute(
                select(users, domains.c.name.label("domain_name"))
                .join(domains, users.c.domain_id == domains.c.id)
                .where(*where)
                .order_by(users.c.local_part)
                .offset(max(offset, 0))
                .limit(max(limit, 0))
            ).all()
        return int(total or 0), [self._info(row) for row in rows]

    def user(self, address: str) -> UserInfo | None:
        """The user with exactly this address, or None.  An address in an alias domain
        gives the user of the target domain (``UserInfo.address`` is the canonical one)."""
        local, domain = split_address(address)
        row = self._find(domain, [local_key(local)])
        return None if row is None else self._info(row)

    def find_mailbox(self, address: str) -> Path | None:
        """The Maildir that receives mail for ``address``, or None.

        Case-insensitive.  vpopmail's extension rule: if ``user-ext`` is not a user, the
        part before the first ``-`` is tried (``user``).  BOUNCE_MAIL users have none.
        """
        local, domain = split_address(address)
        row = self._find(domain, candidates(local_key(local)))
        if row is None or row.flags & UserFlag.BOUNCE_MAIL:
            return None
        return self._home.root / str(row.maildir)

    def verify_password(self, address: str, password: str) -> bool:
        """Whether ``password`` is the user's; False for unknown, password-less or DISABLED."""
        local, domain = split_address(address)
        row = self._find(domain, [local_key(local)])
        usable = row is not None and row.has_password and not row.flags & UserFlag.DISABLED
        stored = self._stored(row).password_hash if row is not None and usable else None
        if not passwords.verify(stored, password):
            return False
        assert row is not None and stored is not None
        if passwords.needs_rehash(stored):
            self._rehash(row.id, password)
        return True

    def secrets_everywhere(self) -> bool:
        """Whether every account that can log in keeps CRAM-MD5/APOP secrets (and there is
        one).  Servers offer CRAM-MD5 and APOP only then: the mechanism is chosen before the
        account is named, and a client that picks one must not meet an account without
        secrets (most clients do not fall back)."""
        with_password = users.c.has_password.is_(True)
        any_user = select(users.c.id).where(with_password).limit(1)
        lacking = select(users.c.id).where(with_password, users.c.has_secrets.is_(False)).limit(1)
        with database_errors(), self._engine.connect() as conn:
            if conn.execute(any_user).first() is None:
                return False
            return conn.execute(lacking).first() is None

    def auth_secrets(self, address: str) -> tuple[str | None, str | None]:
        """The user's CRAM-MD5 contexts and APOP secret (opened), each None if not kept.

        DISABLED users have none."""
        local, domain = split_address(address)
        row = self._find(domain, [local_key(local)])
        if row is None or row.flags & UserFlag.DISABLED or not row.has_secrets:
            return None, None
        stored = self._stored(row)
        apop = None
        if stored.apop_secret is not None:
            from qtoaster.directory.secrets import SecretBox

            apop = SecretBox.load(self._home.secrets_key).open(stored.apop_secret)
        return stored.cram_md5, apop
