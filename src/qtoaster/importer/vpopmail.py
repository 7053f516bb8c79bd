"""Read a vpopmail installation into a :class:`Plan` of pure dataclasses (spec section 22).

Sources: ``~vpopmail/domains/`` (domain directories, also one level of hashed subdirs,
symlinks for alias domains), ``users/assign`` lines ``+alias-:real:uid:gid:dir:-::``, each
domain's ``vpasswd`` (``user:crypted:uid:flags:gecos:dir:quota[:clearpw]``), its
``.qmail-default`` (vdelivermail's unknown-user action), its ``.qmail-<name>`` alias files
and the users' own ``.qmail`` files; or, for the MySQL backend, the rows of the
``vpopmail`` table (or the older one table per domain), ``valias`` and ``aliasdomains``.

Invariants: the source is only ever opened for reading; nothing here touches the
qtoaster directory; every line that cannot be carried over becomes an :class:`Issue`
in the plan (never an exception), so a dry run can report the whole installation.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from qtoaster.directory.legacy import is_legacy
from qtoaster.directory.schema import UNKNOWN_BOUNCE, UNKNOWN_DELETE, UserFlag
from qtoaster.directory.store import DirectoryError, valid_address, valid_domain
from qtoaster.importer.mysqldump import DumpTable, Value

# vpopmail.h "gid flags" (vpopmail 5.4 / 5.6, Inter7; dovecot's passdb-vpopmail.c reads the
# same bits from pw_gid).  NO_SMTP is 0x800 there (indimail's fork moved it to 0x200).
VPOPMAIL_FLAGS = {
    "NO_PASSWD_CHNG": 0x01,
    "NO_POP": 0x02,
    "NO_WEBMAIL": 0x04,
    "NO_IMAP": 0x08,
    "BOUNCE_MAIL": 0x10,
    "NO_RELAY": 0x20,
    "NO_DIALUP": 0x40,
    "V_USER0": 0x80,
    "V_USER1": 0x100,
    "V_USER2": 0x200,
    "V_USER3": 0x400,
    "NO_SMTP": 0x800,
    "QA_ADMIN": 0x1000,
    "V_OVERRIDE": 0x2000,
    "NO_SPAMASSASSIN": 0x4000,
    "DELETE_SPAM": 0x8000,
    "SA_ADMIN": 0x10000,
    "SA_EXPERT": 0x20000,
    "NO_MAILDROP": 0x40000,
}
_MAPPED = {
    "NO_POP": UserFlag.NO_POP,
    "NO_IMAP": UserFlag.NO_IMAP,
    "NO_SMTP": UserFlag.NO_SMTP_AUTH,
    "NO_RELAY": UserFlag.NO_RELAY,
    "BOUNCE_MAIL": UserFlag.BOUNCE_MAIL,
}
# vpopmail has no "disabled" bit: an account refused by every login service is one.
_NO_LOGIN = ("NO_POP", "NO_IMAP", "NO_WEBMAIL", "NO_SMTP")
_QUOTA_PART = re.compile(r"^(\d+)([KMG]?)([SBC]?)$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


@dataclass(frozen=True, slots=True)
class Issue:
    item: str  # "user alice@example.com", "alias file .../.qmail-list"
    reason: str
    error: bool = True  # False: informational (exists already, flag not carried over)


@dataclass(frozen=True, slots=True)
class UserPlan:
    local: str
    password_hash: str | None  # the crypt(3) string as stored by vpopmail
    quota: int | None  # bytes; None = unlimited
    quota_messages: int | None
    flags: UserFlag
    maildir: Path | None  # the source Maildir; None = none found (an empty one is made)
    dropped_flags: tuple[str, ...] = ()
    # Only when vpopmail kept a clear text password and no hash: hashed to argon2 on apply.
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class AliasPlan:
    local: str
    targets: tuple[str, ...]
    keep_copy: bool = False  # a user's own .qmail that also delivers to its Maildir


@dataclass(slots=True)
class DomainPlan:
    name: str
    path: Path | None
    unknown_user: str = UNKNOWN_BOUNCE  # 'bounce', 'delete' or a catch-all address
    users: list[UserPlan] = field(default_factory=list)
    aliases: list[AliasPlan] = field(default_factory=list)
    alias_domains: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Plan:
    domains: list[DomainPlan] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)


def parse_quota(text: str) -> tuple[int | None, int | None]:
    """``(bytes, messages)`` of a vpopmail quota (spec 21.4); None = unlimited.

    ``NOQUOTA``, ``5M``, ``52428800S``, ``52428800S,1000C``.  A zero limit means no limit,
    as in Maildir++'s maildirquota.c.  ValueError for anything else.
    """
    value = text.strip()
    if value == "" or value.upper() == "NOQUOTA":
        return None, None
    size: int | None = None
    count: int | None = None
    for part in value.split(","):
        match = _QUOTA_PART.match(part.strip())
        if match is None:
            raise ValueError(f"invalid quota {text!r}")
        number = int(match.group(1)) * _UNITS[match.group(2).upper()]
        if match.group(3).upper() == "C":
            count = number or None
        else:
            size = number or None
    return size, count


def map_flags(gid: int) -> tuple[UserFlag, tuple[str, ...]]:
    """qtoaster flags for vpopmail pw_gid bits, and the names of the bits not carried."""
    names = [name for name, bit in VPOPMAIL_FLAGS.items() if gid & bit]
    flags = UserFlag(0)
    for name in names:
        flags |= _MAPPED.get(name, UserFlag(0))
    if all(name in names for name in _NO_LOGIN):
        flags |= UserFlag.DISABLED
    return flags, tuple(name for name in names if name not in _MAPPED)


def maildir_key(path: str) -> str:
    """A Maildir path reduced to ``domain/user/Maildir`` (what follows ``/domains/``), so a
    path written on the old machine matches the tree wherever it is mounted now."""
    trimmed = path.strip().rstrip("/")
    at = trimmed.rfind("/domains/")
    return (trimmed[at + len("/domains/") :] if at >= 0 else trimmed).lower()


# -- finding the domains -------------------------------------------------------------------


def _is_domain_dir(path: Path) -> bool:
    return path.is_dir() and ((path / "vpasswd").is_file() or (path / ".qmail-default").exists())


def _scan_domains(source: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """``(real, symlinked)``: domain name -> directory, from ``domains/`` and one level of
    hashed subdirectories (vpopmail's big-site layout ``domains/<x>/<domain>``)."""
    real: dict[str, Path] = {}
    links: dict[str, Path] = {}
    top = source / "domains"
    entries = sorted(top.iterdir()) if top.is_dir() else []
    for entry in list(entries):
        if not entry.is_symlink() and entry.is_dir() and not _is_domain_dir(entry):
            entries.extend(sorted(p for p in entry.iterdir() if _is_domain_dir(p)))
    for entry in entries:
        if entry.is_symlink() and entry.is_dir():
            links[entry.name.lower()] = entry.resolve()
        elif _is_domain_dir(entry):
            real[entry.name.lower()] = entry
    return real, links


def _source_path(source: Path, original: str) -> Path | None:
    """A directory named on the old machine, found in the tree as mounted now."""
    if Path(original).is_dir():
        return Path(original)
    at = original.rfind("/domains/")
    if at >= 0:
        moved = source / "domains" / original[at + len("/domains/") :]
        if moved.is_dir():
            return moved
    return None


def _read_assign(path: Path, source: Path) -> tuple[dict[str, Path | None], dict[str, str]]:
    """``(real, aliases)`` from users/assign: ``+dom-:real:uid:gid:dir:-::`` lines."""
    real: dict[str, Path | None] = {}
    aliases: dict[str, str] = {}
    for line in path.read_text("utf-8", "surrogateescape").splitlines():
        if not line.startswith("+"):
            continue  # '=' single-user assignments and the final '.'
        fields = line[1:].split(":")
        if len(fields) < 5:
            continue
        name, target = fields[0].removesuffix("-").lower(), fields[1].lower()
        if name != target:
            aliases[name] = target
        else:
            real[name] = _source_path(source, fields[4])
    return real, aliases


# -- per-domain files ----------------------------------------------------------------------


def _dot_qmail_targets(
    lines: Iterable[str], maildirs: Mapping[str, str]
) -> tuple[list[str], list[str]]:
    """``(addresses, problems)`` for the lines of a .qmail file (dot-qmail(5)) or the
    valias_line values of one alias.  Maildir lines are mapped to the user they belong to."""
    targets: list[str] = []
    problems: list[str] = []
    for raw in lines:
        line = raw.rstrip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("|"):
            problems.append(f"program delivery {line!r} cannot be imported")
        elif line.startswith(("/", ".")):
            owner = maildirs.get(maildir_key(line)) if line.endswith("/") else None
            if owner is None:
                problems.append(f"delivery to {line!r} is not the Maildir of an imported user")
            else:
                targets.append(owner)
        else:
            address = line.removeprefix("&").strip()
            if "@" not in address:
                problems.append(f"forward to unqualified address {address!r}")
            else:
                targets.append(address)
    return targets, problems


def _unknown_user(domain: str, path: Path, maildirs: Mapping[str, str], issues: list[Issue]) -> str:
    """The unknown-user action from ``<domaindir>/.qmail-default`` (spec 22)."""
    qmail_default = path / ".qmail-default"
    if not qmail_default.is_file():
        return UNKNOWN_BOUNCE
    text = qmail_default.read_text("utf-8", "surrogateescape")
    line = next((ln for ln in text.splitlines() if "vdelivermail" in ln), None)
    try:
        words = shlex.split(line.lstrip().removeprefix("|")) if line else []
    except ValueError:
        words = []
    action = words[-1] if len(words) >= 3 else ""
    if action == "bounce-no-mailbox":
        return UNKNOWN_BOUNCE
    if action == "delete":
        return UNKNOWN_DELETE
    if "@" in action:
        return action.removeprefix("&")
    owner = maildirs.get(maildir_key(action)) if action.startswith("/") else None
    if owner is not None:
        return owner
    issues.append(
        Issue(f"catch-all of {domain}", f"{qmail_default} not understood; unknown users bounce")
    )
    return UNKNOWN_BOUNCE


def _alias_files(
    domain: str, path: Path, maildirs: Mapping[str, str], issues: list[Issue]
) -> list[AliasPlan]:
    aliases: list[AliasPlan] = []
    for file in sorted(path.glob(".qmail-*")):
        name = file.name.removeprefix(".qmail-").replace(":", ".").lower()
        if name == "default" or not file.is_file():
            continue
        item = f"alias {name}@{domain} ({file})"
        if name.endswith("-default"):
            issues.append(Issue(item, "extension defaults (-default) are not supported"))
            continue
        lines = file.read_text("utf-8", "surrogateescape").splitlines()
        targets, problems = _dot_qmail_targets(lines, maildirs)
        if problems or not targets:
            issues.append(Issue(item, "; ".join(problems) or "no forwarding target"))
            continue
        aliases.append(AliasPlan(name, tuple(targets)))
    return aliases


def _user_forward(
    address: str, userdir: Path | None, maildirs: Mapping[str, str], issues: list[Issue]
) -> AliasPlan | None:
    """A user's own ``.qmail`` (vdelivermail honours it): forwards, perhaps keeping a copy."""
    dot_qmail = userdir / ".qmail" if userdir is not None else None
    if dot_qmail is None or not dot_qmail.is_file():
        return None
    lines = dot_qmail.read_text("utf-8", "surrogateescape").splitlines()
    # ./Maildir/ in the user's own .qmail is its own mailbox (qmail-local runs in $HOME).
    own = {ln.strip() for ln in lines} & {"./Maildir/", "Maildir/"}
    targets, problems = _dot_qmail_targets([ln for ln in lines if ln.strip() not in own], maildirs)
    keep = bool(own) or address in targets
    targets = [t for t in targets if t != address]
    if problems:
        issues.append(Issue(f"forward of {address} ({dot_qmail})", "; ".join(problems)))
        return None
    local = address.partition("@")[0]
    return AliasPlan(local, tuple(targets), keep_copy=keep) if targets else None


# -- users ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Account:
    """One vpasswd line or vpopmail row, before it is checked."""

    name: str
    passwd: str
    gid: str
    directory: str
    quota: str
    clear: str


def _vpasswd(path: Path) -> list[_Account]:
    accounts = []
    for line in path.read_text("utf-8", "surrogateescape").splitlines():
        fields = line.split(":")
        if len(fields) < 7 or line.startswith("#"):
            continue
        clear = ":".join(fields[7:])
        accounts.append(_Account(fields[0], fields[1], fields[3], fields[5], fields[6], clear))
    return accounts


def _text(value: Value) -> str:
    return "" if value is None else str(value)


def _sql_accounts(rows: Iterable[Mapping[str, Value]]) -> list[_Account]:
    return [
        _Account(
            _text(row.get("pw_name")),
            _text(row.get("pw_passwd")),
            _text(row.get("pw_gid")),
            _text(row.get("pw_dir")),
            _text(row.get("pw_shell")),
            _text(row.get("pw_clear_passwd")),
        )
        for row in rows
    ]


def _user_dir(source: Path, domain_path: Path | None, account: _Account) -> Path | None:
    found = _source_path(source, account.directory) if account.directory else None
    if found is None and domain_path is not None and (domain_path / account.name).is_dir():
        found = domain_path / account.name
    return found


def _user(
    domain: str, account: _Account, userdir: Path | None, issues: list[Issue]
) -> UserPlan | None:
    item = f"user {account.name}@{domain}"
    try:
        local, _ = valid_address(f"{account.name}@{domain}")
        size, count = parse_quota(account.quota)
        gid = int(account.gid or "0")
    except (DirectoryError, ValueError) as exc:
        issues.append(Issue(item, str(exc)))
        return None
    flags, dropped = map_flags(gid)
    password_hash: str | None = account.passwd or None
    if password_hash is not None and password_hash.startswith("!"):
        # A locked account (usermod -L style): keep the hash, refuse logins.
        password_hash, flags = password_hash[1:] or None, flags | UserFlag.DISABLED
    if password_hash is not None and not is_legacy(password_hash):
        issues.append(Issue(item, "password hash of an unknown form: imported without password"))
        password_hash = None
    clear = account.clear if account.passwd == "" and account.clear else None
    maildir = userdir / "Maildir" if userdir is not None else None
    if maildir is not None and not maildir.is_dir():
        maildir = None
    return UserPlan(local, password_hash, size, count, flags, maildir, dropped, clear)


def _munched(domain: str) -> str:
    """vpopmail's old one-table-per-domain name (vauth_munch_domain: '.' and '-' to '_')."""
    return domain.replace(".", "_").replace("-", "_")


# -- the whole installation ----------------------------------------------------------------


@dataclass(slots=True)
class _Source:
    """What was found before the plan is built: domain -> directory, alias -> real domain."""

    root: Path
    paths: dict[str, Path | None]
    aliases: dict[str, str]
    tables: Mapping[str, DumpTable] | None


def _rows(tables: Mapping[str, DumpTable] | None, name: str) -> list[dict[str, Value]]:
    table = tables.get(name) if tables is not None else None
    return table.rows if table is not None else []


def _find(source: Path, assign: Path | None, tables: Mapping[str, DumpTable] | None) -> _Source:
    real, links = _scan_domains(source)
    paths: dict[str, Path | None] = dict(real)
    aliases: dict[str, str] = {}
    if assign is not None:
        assigned, assigned_aliases = _read_assign(assign, source)
        for name, path in assigned.items():
            paths[name] = paths.get(name) or path
        aliases.update(assigned_aliases)
    owners = {path.resolve(): name for name, path in paths.items() if path is not None}
    for name, target in links.items():
        if target in owners:
            aliases.setdefault(name, owners[target])
        elif _is_domain_dir(target):
            paths.setdefault(name, target)
    for row in _rows(tables, "vpopmail"):
        name = _text(row.get("pw_domain")).lower()
        if name and name not in paths:
            paths[name] = (
                (source / "domains" / name) if (source / "domains" / name).is_dir() else None
            )
    for row in _rows(tables, "aliasdomains"):
        aliases.setdefault(_text(row.get("alias")).lower(), _text(row.get("domain")).lower())
    for name in aliases:
        paths.pop(name, None)
    return _Source(source, paths, aliases, tables)


def _accounts(found: _Source, domain: str) -> list[_Account]:
    path = found.paths[domain]
    if found.tables is None:
        vpasswd = path / "vpasswd" if path is not None else None
        return _vpasswd(vpasswd) if vpasswd is not None and vpasswd.is_file() else []
    rows = [
        r for r in _rows(found.tables, "vpopmail") if _text(r.get("pw_domain")).lower() == domain
    ]
    return _sql_accounts(rows + _rows(found.tables, _munched(domain)))


def _valiases(found: _Source, domain: str) -> dict[str, list[str]]:
    lines: dict[str, list[str]] = {}
    for row in _rows(found.tables, "valias"):
        if _text(row.get("domain")).lower() == domain:
            local = _text(row.get("alias")).lower()
            lines.setdefault(local, []).append(_text(row.get("valias_line")))
    return lines


def _check_tables(found: _Source, issues: list[Issue]) -> None:
    """Tables that look like vpopmail user tables but belong to no domain found."""
    known = {"vpopmail"} | {_munched(name) for name in found.paths}
    for name, table in (found.tables or {}).items():
        if "pw_name" in table.columns and name not in known:
            issues.append(Issue(f"table {name}", "user table of no domain found in the source"))


def read_installation(
    source: Path,
    *,
    assign: Path | None = None,
    tables: Mapping[str, DumpTable] | None = None,
    only: Collection[str] = (),
) -> Plan:
    """The plan for importing the vpopmail home ``source``.

    ``tables``: the MySQL backend's rows (from a dump or a connection) instead of vpasswd
    files.  ``only``: import just these domains (and their alias domains).
    """
    plan = Plan()
    found = _find(source, assign, tables)
    _check_tables(found, plan.issues)
    wanted = {name.lower() for name in only}
    for name in sorted(wanted - set(found.paths) - set(found.aliases)):
        plan.issues.append(Issue(f"domain {name}", "not found in the source"))
    names = sorted(n for n in found.paths if not wanted or n in wanted)
    accounts: dict[str, list[tuple[_Account, Path | None]]] = {}
    maildirs: dict[str, str] = {}
    for name in names:
        accounts[name] = []
        for account in _accounts(found, name):
            userdir = _user_dir(source, found.paths[name], account)
            accounts[name].append((account, userdir))
            key = maildir_key(f"{account.directory}/Maildir") if account.directory else None
            maildirs[key or f"{name}/{account.name}/maildir".lower()] = f"{account.name}@{name}"
            if userdir is not None:
                maildirs.setdefault(maildir_key(str(userdir / "Maildir")), f"{account.name}@{name}")
    for name in names:
        domain = _domain(found, name, accounts[name], maildirs, plan.issues)
        if domain is not None:
            plan.domains.append(domain)
    _attach_alias_domains(found, plan, wanted)
    return plan


def _domain(
    found: _Source,
    name: str,
    accounts: list[tuple[_Account, Path | None]],
    maildirs: Mapping[str, str],
    issues: list[Issue],
) -> DomainPlan | None:
    try:
        valid_domain(name)
    except DirectoryError as exc:
        issues.append(Issue(f"domain {name}", str(exc)))
        return None
    path = found.paths[name]
    plan = DomainPlan(name, path)
    seen: set[str] = set()
    for account, userdir in accounts:
        user = _user(name, account, userdir, issues)
        if user is not None and user.local in seen:
            issues.append(Issue(f"user {user.local}@{name}", "listed twice; first one kept"))
        elif user is not None:
            seen.add(user.local)
            plan.users.append(user)
            forward = _user_forward(f"{user.local}@{name}", userdir, maildirs, issues)
            if forward is not None:
                plan.aliases.append(forward)
    if path is not None:
        plan.unknown_user = _unknown_user(name, path, maildirs, issues)
        plan.aliases.extend(_alias_files(name, path, maildirs, issues))
    for local, lines in sorted(_valiases(found, name).items()):
        targets, problems = _dot_qmail_targets(lines, maildirs)
        if problems or not targets:
            reason = "; ".join(problems) or "no forwarding target"
            issues.append(Issue(f"alias {local}@{name} (valias)", reason))
        else:
            plan.aliases.append(AliasPlan(local, tuple(targets)))
    return plan


def _attach_alias_domains(found: _Source, plan: Plan, wanted: set[str]) -> None:
    by_name = {domain.name: domain for domain in plan.domains}
    for alias, target in sorted(found.aliases.items()):
        if target in by_name:
            by_name[target].alias_domains.append(alias)
        elif target not in found.paths:
            plan.issues.append(Issue(f"alias domain {alias}", f"its domain {target} is not found"))
        elif alias in wanted:
            plan.issues.append(
                Issue(f"alias domain {alias}", f"its domain {target} is not imported")
            )
