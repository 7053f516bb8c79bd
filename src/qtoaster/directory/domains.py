"""Domains, alias domains and aliases (forwards) of the directory; resolving an address.

vpopmail's vadddomain/vaddaliasdomain/valias and vdelivermail's lookup order (spec 22):
an address's aliases first, then its mailbox (with the user-ext fallback), then the
domain's handling of unknown users.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from qtoaster.core.domain import domain_key, local_key
from qtoaster.core.envelope import split_address
from qtoaster.directory import credentials
from qtoaster.directory.base import (
    UNSET,
    DirectoryBase,
    candidates,
    database_errors,
    non_negative,
    storable,
)
from qtoaster.directory.model import (
    AliasInfo,
    DirectoryError,
    DomainInfo,
    Recipient,
    valid_address,
    valid_domain,
    valid_target,
    valid_unknown_user,
)
from qtoaster.directory.schema import UNKNOWN_BOUNCE, aliases, domains, users
from qtoaster.directory.vacations import read_vacation


class DomainOps(DirectoryBase):
    # -- domains ---------------------------------------------------------------------

    def add_domain(
        self,
        name: str,
        *,
        default_quota: int | None = None,
        max_users: int | None = None,
        unknown_user: str = UNKNOWN_BOUNCE,
        secrets: bool = False,
    ) -> None:
        domain = valid_domain(name)
        values = dict(
            name=domain,
            created=self._now(),
            default_quota=non_negative("quota", default_quota),
            max_users=non_negative("max users", max_users),
            unknown_user=valid_unknown_user(unknown_user),
            secrets=secrets,
        )
        try:
            with self._write() as conn:
                conn.execute(domains.insert().values(**values))
        except IntegrityError as exc:
            raise DirectoryError(f"domain {domain} already exists") from exc

    def add_alias_domain(self, alias: str, target: str) -> None:
        """Make ``alias`` a second name for the mailboxes of ``target`` (vpopmail's
        vaddaliasdomain)."""
        name = valid_domain(alias)
        with self._write() as conn:
            row = self._domain_row(conn, target)
            if row.alias_of is not None:
                raise DirectoryError(f"{row.name} is itself an alias of another domain")
            try:
                with conn.begin_nested():
                    conn.execute(
                        domains.insert().values(
                            name=name, alias_of=row.id, created=self._now(), unknown_user="bounce"
                        )
                    )
            except IntegrityError as exc:
                raise DirectoryError(f"domain {name} already exists") from exc

    def set_domain(
        self,
        name: str,
        *,
        default_quota: Any = UNSET,
        max_users: Any = UNSET,
        unknown_user: Any = UNSET,
        secrets: Any = UNSET,
    ) -> None:
        """Change a domain's defaults; arguments left UNSET keep their value."""
        values: dict[str, Any] = {}
        if default_quota is not UNSET:
            values["default_quota"] = non_negative("quota", default_quota)
        if max_users is not UNSET:
            values["max_users"] = non_negative("max users", max_users)
        if unknown_user is not UNSET:
            values["unknown_user"] = valid_unknown_user(unknown_user)
        if secrets is not UNSET:
            values["secrets"] = bool(secrets)
        with self._write() as conn:
            row = self._domain_row(conn, name)
            if row.alias_of is not None:
                raise DirectoryError(f"{row.name} is an alias domain: change its target")
            if values:
                conn.execute(domains.update().where(domains.c.id == row.id).values(**values))

    def delete_domain(self, name: str) -> None:
        """Remove the domain, its alias domains, users and aliases (not its files).

        Removing an alias domain removes only that name."""
        with self._write() as conn:
            domain_id = self._domain_row(conn, name).id
            # Explicit deletes rather than ON DELETE CASCADE: the same on every engine.
            ids = select(domains.c.id).where(
                (domains.c.id == domain_id) | (domains.c.alias_of == domain_id)
            )
            conn.execute(aliases.delete().where(aliases.c.domain_id.in_(ids)))
            user_ids = [
                int(i)
                for i in conn.execute(select(users.c.id).where(users.c.domain_id.in_(ids)))
                .scalars()
                .all()
            ]
            conn.execute(users.delete().where(users.c.domain_id.in_(ids)))
            if user_ids:  # their credentials go with them (the store opens only if needed)
                with self._credentials().writing(conn) as target:
                    credentials.delete(target, user_ids)
            conn.execute(domains.delete().where(domains.c.alias_of == domain_id))
            conn.execute(domains.delete().where(domains.c.id == domain_id))

    def domains(self) -> list[str]:
        with database_errors(), self._engine.connect() as conn:
            return list(conn.execute(select(domains.c.name).order_by(domains.c.name)).scalars())

    def domain(self, name: str) -> DomainInfo | None:
        with database_errors(), self._engine.connect() as conn:
            row = conn.execute(select(domains).where(domains.c.name == domain_key(name))).first()
            if row is None:
                return None
            real_id = row.alias_of if row.alias_of is not None else row.id
            count = func.count()
            n_users = conn.execute(
                select(count).select_from(users).where(users.c.domain_id == real_id)
            ).scalar()
            n_aliases = conn.execute(
                select(func.count(func.distinct(aliases.c.local_part))).where(
                    aliases.c.domain_id == real_id
                )
            ).scalar()
            names = conn.execute(
                select(domains.c.name).where(domains.c.alias_of == real_id).order_by(domains.c.name)
            ).scalars()
            target = None
            if row.alias_of is not None:
                target = conn.execute(
                    select(domains.c.name).where(domains.c.id == real_id)
                ).scalar()
            return DomainInfo(
                name=row.name,
                alias_of=target,
                default_quota=row.default_quota,
                max_users=row.max_users,
                unknown_user=row.unknown_user,
                secrets=bool(row.secrets),
                users=int(n_users or 0),
                aliases=int(n_aliases or 0),
                alias_domains=tuple(names),
                created=row.created,
            )

    def hosts_domain(self, name: str) -> bool:
        if not storable(name):
            return False
        query = select(domains.c.id).where(domains.c.name == domain_key(name))
        with database_errors(), self._engine.connect() as conn:
            return conn.execute(query).first() is not None

    def resolve(self, address: str) -> Recipient | None:
        """Who receives mail for ``address``; None if its domain is not hosted here.

        The mailbox follows :meth:`find_mailbox`'s extension rule; forwards are the
        aliases of exactly this local part (vdelivermail checks valias first, spec 22).
        """
        local, domain = split_address(address)
        local = local_key(local)
        if not storable(domain):
            return None
        with database_errors(), self._engine.connect() as conn:
            real = conn.execute(self._real_domain.where(self._asked.c.name == domain)).first()
            if real is None:
                return None
            if not storable(local):
                # No such name can be stored: an unknown user of a hosted domain, never
                # "not hosted" (chkuser would accept it and delivery bounce it).
                return Recipient(real.name, local, None, (), False, real.unknown_user)
            rows = {
                row.local_part: row
                for row in conn.execute(
                    select(users, domains.c.name.label("domain_name"))
                    .join(domains, users.c.domain_id == domains.c.id)
                    .where(users.c.domain_id == real.id, users.c.local_part.in_(candidates(local)))
                )
            }
            targets = conn.execute(
                select(aliases.c.target, aliases.c.keep_copy)
                .where(aliases.c.domain_id == real.id, aliases.c.local_part == local)
                .order_by(aliases.c.id)
            ).all()
            row = next((rows[c] for c in candidates(local) if c in rows), None)
            vacation = None if row is None else read_vacation(conn, int(row.id))
        return Recipient(
            domain=real.name,
            local_part=local,
            user=None if row is None else self._info(row),
            forwards=tuple(t.target for t in targets),
            keep_copy=any(t.keep_copy for t in targets),
            unknown_user=real.unknown_user,
            vacation=vacation,
        )

    # -- aliases ---------------------------------------------------------------------

    def add_alias(self, address: str, targets: list[str], keep_copy: bool = False) -> int:
        """Forward ``address`` to ``targets`` (addresses or Maildir paths); the number of
        new targets (a target already there is kept, its keep_copy updated)."""
        local, domain = valid_address(address)
        checked = [valid_target(t) for t in targets]
        if not checked:
            raise DirectoryError("an alias needs at least one target")
        if f"{local}@{domain}" in checked:
            raise DirectoryError(f"{local}@{domain} cannot forward to itself")
        added = 0
        with self._write() as conn:
            real_id = self._real_domain_id(conn, domain)
            where = (aliases.c.domain_id == real_id) & (aliases.c.local_part == local)
            present = set(conn.execute(select(aliases.c.target).where(where)).scalars())
            for target in checked:
                if target not in present:
                    conn.execute(
                        aliases.insert().values(
                            domain_id=real_id, local_part=local, target=target, keep_copy=keep_copy
                        )
                    )
                    present.add(target)
                    added += 1
            conn.execute(aliases.update().where(where).values(keep_copy=keep_copy))
        return added

    def delete_alias(self, address: str, targets: list[str] | None = None) -> int:
        """Remove some targets of ``address`` (all if None); the number removed."""
        local, domain = split_address(address)
        with self._write() as conn:
            real_id = self._real_domain_id(conn, domain)
            where = (aliases.c.domain_id == real_id) & (aliases.c.local_part == local_key(local))
            if targets:
                where = where & aliases.c.target.in_([valid_target(t) for t in targets])
            removed = conn.execute(aliases.delete().where(where)).rowcount
        if not removed:
            raise DirectoryError(f"no such alias: {address}")
        return int(removed)

    def aliases(self, domain: str | None = None) -> list[AliasInfo]:
        query = select(aliases, domains.c.name.label("domain_name")).join(
            domains, aliases.c.domain_id == domains.c.id
        )
        with database_errors(), self._engine.connect() as conn:
            if domain is not None:
                real_id = self._real_domain_id(conn, domain)
                query = query.where(domains.c.id == real_id)
            rows = conn.execute(
                query.order_by(domains.c.name, aliases.c.local_part, aliases.c.id)
            ).all()
        return [
            AliasInfo(f"{row.local_part}@{row.domain_name}", row.target, bool(row.keep_copy))
            for row in rows
        ]
