"""Apply an import :class:`Plan` to the directory and copy the Maildirs, or report a dry run.

Invariants:
- the source is only read: Maildirs are copied (never moved), files opened read-only;
- idempotent: what exists already (domain, alias domain, user, alias, a non-empty
  mailbox) is skipped and reported, never duplicated or overwritten;
- a mailbox appears whole or not at all, without ``maildirsize``, ``tmp/`` files or
  symlinks (``maildir/copy.py`` does the copying).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from qtoaster.core.home import Home
from qtoaster.directory.schema import UserFlag
from qtoaster.directory.store import DirectoryError, UserInfo
from qtoaster.importer.vpopmail import AliasPlan, DomainPlan, Issue, Plan, UserPlan
from qtoaster.maildir.copy import copy_maildir, count_messages, has_messages


class ImportTarget(Protocol):
    """The part of :class:`qtoaster.directory.store.Directory` an import uses."""

    def add_domain(
        self,
        name: str,
        *,
        default_quota: int | None = None,
        max_users: int | None = None,
        unknown_user: str = "bounce",
    ) -> None: ...

    def add_alias_domain(self, alias: str, target: str) -> None: ...

    def add_user(
        self,
        address: str,
        password: str | None,
        quota: int | None = None,
        *,
        password_hash: str | None = None,
        quota_messages: int | None = None,
        flags: UserFlag = UserFlag(0),  # noqa: B008  (an immutable IntFlag value)
    ) -> None: ...

    def add_alias(self, address: str, targets: list[str], keep_copy: bool = False) -> int: ...

    def hosts_domain(self, name: str) -> bool: ...

    def user(self, address: str) -> UserInfo | None: ...


@dataclass(slots=True)
class DomainCounts:
    added: bool = False
    users: int = 0
    aliases: int = 0
    alias_domains: int = 0
    messages: int = 0


@dataclass(slots=True)
class Report:
    dry_run: bool
    domains: dict[str, DomainCounts] = field(default_factory=dict)
    issues: list[Issue] = field(default_factory=list)
    dropped_flags: Counter[str] = field(default_factory=Counter)

    @property
    def failed(self) -> bool:
        """Whether something was skipped with an error (the command exits 1)."""
        return any(issue.error for issue in self.issues)

    def lines(self) -> list[str]:
        verb = "would import" if self.dry_run else "imported"
        out = ["dry run: nothing was changed"] if self.dry_run else []
        for name, c in sorted(self.domains.items()):
            state = "new" if c.added else "exists"
            out.append(
                f"{name} ({state}): {verb} {c.users} users, {c.aliases} aliases,"
                f" {c.alias_domains} alias domains, {c.messages} messages"
            )
        for flag, users in sorted(self.dropped_flags.items()):
            out.append(f"note: vpopmail flag {flag} has no qtoaster equivalent ({users} users)")
        for issue in self.issues:
            out.append(f"{'error' if issue.error else 'skipped'}: {issue.item}: {issue.reason}")
        errors = sum(issue.error for issue in self.issues)
        out.append(f"{len(self.domains)} domains, {errors} errors")
        return out


def apply_plan(
    plan: Plan,
    directory: ImportTarget | None,
    home: Home,
    *,
    dry_run: bool = False,
    copy_mail: bool = True,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Import ``plan``; with ``dry_run`` change nothing (``directory`` may then be None, or
    is only asked what exists).  Directory trouble (DirectoryUnavailable) propagates."""
    report = Report(dry_run, issues=list(plan.issues))
    for domain in plan.domains:
        if progress is not None:
            progress(f"{domain.name}: {len(domain.users)} users")
        counts = report.domains[domain.name] = DomainCounts()
        exists = directory is not None and directory.hosts_domain(domain.name)
        if exists:
            report.issues.append(Issue(f"domain {domain.name}", "exists", error=False))
        elif not dry_run and directory is not None:
            try:
                directory.add_domain(domain.name, unknown_user=domain.unknown_user)
            except DirectoryError as exc:
                report.issues.append(Issue(f"domain {domain.name}", str(exc)))
                del report.domains[domain.name]
                continue
        counts.added = not exists
        _alias_domains(domain, directory, counts, report, dry_run)
        for user in domain.users:
            _user(domain.name, user, directory, home, counts, report, dry_run, copy_mail)
        for alias in domain.aliases:
            _alias(f"{alias.local}@{domain.name}", alias, directory, counts, report, dry_run)
    return report


def _alias(
    address: str,
    alias: AliasPlan,
    directory: ImportTarget | None,
    counts: DomainCounts,
    report: Report,
    dry_run: bool,
) -> None:
    if not dry_run and directory is not None:
        try:
            added = directory.add_alias(address, list(alias.targets), keep_copy=alias.keep_copy)
        except DirectoryError as exc:
            report.issues.append(Issue(f"alias {address}", str(exc)))
            return
        if not added:  # every target there already: a rerun
            report.issues.append(Issue(f"alias {address}", "exists", error=False))
            return
    counts.aliases += 1


def _alias_domains(
    domain: DomainPlan,
    directory: ImportTarget | None,
    counts: DomainCounts,
    report: Report,
    dry_run: bool,
) -> None:
    for alias in domain.alias_domains:
        if directory is not None and directory.hosts_domain(alias):
            report.issues.append(Issue(f"alias domain {alias}", "exists", error=False))
            continue
        if not dry_run and directory is not None:
            try:
                directory.add_alias_domain(alias, domain.name)
            except DirectoryError as exc:
                report.issues.append(Issue(f"alias domain {alias}", str(exc)))
                continue
        counts.alias_domains += 1


def _user(
    domain: str,
    user: UserPlan,
    directory: ImportTarget | None,
    home: Home,
    counts: DomainCounts,
    report: Report,
    dry_run: bool,
    copy_mail: bool,
) -> None:
    address = f"{user.local}@{domain}"
    exists = directory is not None and directory.user(address) is not None
    if exists:
        report.issues.append(Issue(f"user {address}", "exists", error=False))
    else:
        report.dropped_flags.update(user.dropped_flags)
        counts.users += 1
    if not dry_run and not exists and directory is not None:
        try:
            directory.add_user(
                address,
                user.password,
                user.quota,
                password_hash=user.password_hash,
                quota_messages=user.quota_messages,
                flags=user.flags,
            )
        except DirectoryError as exc:
            counts.users -= 1
            report.issues.append(Issue(f"user {address}", str(exc)))
            return
    if not copy_mail or user.maildir is None:
        return
    destination = home.maildir(domain, user.local)
    if has_messages(destination):
        # A rerun, or mail delivered here since: never mix two mailboxes.
        report.issues.append(Issue(f"mail of {address}", "mailbox not empty", error=False))
        return
    try:
        counts.messages += (
            count_messages(user.maildir) if dry_run else copy_maildir(user.maildir, destination)
        )
    except OSError as exc:
        report.issues.append(Issue(f"mail of {address}", f"copy failed: {exc}"))


# -- Maildirs -------------------------------------------------------------------------------
