"""The directory's tables (SQLAlchemy Core), its schema version and the migration hook.

One schema serves SQLite and PostgreSQL (DESIGN.md section 6): only portable column types,
no engine-specific SQL.  The tables already hold the whole vpopmail feature set (spec
section 22) even where the code does not use it yet: domain aliases, per-domain default
quota and user limit, unknown-user handling, per-user flags, aliases/forwards.

Invariants:
- domain names and local parts are stored lower-case; lookups compare lower-case values,
  so the unique indexes below are the case-insensitive uniqueness rules;
- ``users.maildir`` is relative to the qtoaster home, so a home can move;
- since version 3 ``users`` holds no credential (its retired credential columns stay
  NULL): hashes and secrets are in the credential store (credentials.py), and
  ``has_password``/``has_secrets`` say what it holds;
- since version 4 ``users.junk_spam`` is the user's spam folder choice and ``vacations``
  holds at most one autoresponder setting per user (docs/vacation.md);
- ``schema_version`` has exactly one row, equal to :data:`SCHEMA_VERSION` once
  :func:`install` or :func:`upgrade` has committed.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    select,
    text,
)

SCHEMA_VERSION = 4

# Unknown-user handling of a domain (vpopmail's .qmail-default argument, spec 22):
# 'bounce' (bounce-no-mailbox), 'delete' (accept and discard), or a catch-all address.
UNKNOWN_BOUNCE = "bounce"
UNKNOWN_DELETE = "delete"


class UserFlag(enum.IntFlag):
    """Bits of ``users.flags`` (after vpopmail's pw_gid flags, spec 22)."""

    NO_POP = 0x01  # POP3 login refused
    NO_SMTP_AUTH = 0x02  # SMTP AUTH refused
    NO_RELAY = 0x04  # authenticated, but may not relay
    DISABLED = 0x08  # every login refused (mail is still delivered)
    BOUNCE_MAIL = 0x10  # mail to this user bounces as if the user did not exist
    NO_IMAP = 0x20  # IMAP login refused (vpopmail's NO_IMAP)


metadata = MetaData()

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, nullable=False),
)

domains = Table(
    "domains",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(253), nullable=False, unique=True),
    # An alias domain has no users of its own: its mail goes to the users of alias_of.
    Column("alias_of", Integer, ForeignKey("domains.id", ondelete="CASCADE"), nullable=True),
    Column("default_quota", BigInteger, nullable=True),  # bytes for new users; NULL = none
    Column("max_users", Integer, nullable=True),  # NULL = unlimited
    Column("unknown_user", String(320), nullable=False, default=UNKNOWN_BOUNCE),
    Column("created", BigInteger, nullable=False),  # Unix seconds
    # v2: keep CRAM-MD5/APOP secrets for this domain's users (opt-in, docs/directory.md).
    Column("secrets", Boolean, nullable=False, default=False, server_default=false()),
)

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("domain_id", Integer, ForeignKey("domains.id", ondelete="CASCADE"), nullable=False),
    Column("local_part", String(64), nullable=False),
    # Retired in v3 (always NULL): the credential store keeps hashes (credentials.py).
    Column("password_hash", String(255), nullable=True),
    Column("quota", BigInteger, nullable=True),  # bytes (Maildir++ 'S'); NULL = unlimited
    Column("quota_messages", Integer, nullable=True),  # Maildir++ 'C'; NULL = unlimited
    Column("flags", Integer, nullable=False, default=0),  # UserFlag bits
    Column("maildir", String(1024), nullable=False),  # relative to the home
    Column("created", BigInteger, nullable=False),
    # v2: the per-user secrets choice (NULL = the domain's).
    Column("secrets", Boolean, nullable=True),
    # Retired in v3 (always NULL): the CRAM-MD5 contexts and sealed APOP secret moved to
    # the credential store.  Kept so that old rows need no table rebuild.
    Column("cram_md5", String(64), nullable=True),
    Column("apop_secret", String(255), nullable=True),
    # v3: the facts others need about credentials, without the credentials: whether the
    # user has a password (can log in) and whether CRAM-MD5/APOP secrets are stored.
    Column("has_password", Boolean, nullable=False, default=False, server_default=false()),
    Column("has_secrets", Boolean, nullable=False, default=False, server_default=false()),
    # v4: file mail the spam scanner marked into .Junk instead of INBOX (docs/vacation.md).
    Column("junk_spam", Boolean, nullable=False, default=False, server_default=false()),
    # The delivery lookup is one probe of this index (domain_id, local_part).
    UniqueConstraint("domain_id", "local_part", name="users_address"),
)

aliases = Table(
    "aliases",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("domain_id", Integer, ForeignKey("domains.id", ondelete="CASCADE"), nullable=False),
    Column("local_part", String(64), nullable=False),
    Column("target", String(320), nullable=False),  # an address or a Maildir path
    Column("keep_copy", Boolean, nullable=False, default=False),  # also deliver to the user
    UniqueConstraint("domain_id", "local_part", "target", name="aliases_target"),
)
Index("aliases_address", aliases.c.domain_id, aliases.c.local_part)

# v4: the vacation autoresponder of a user (qmailadmin's vacation, docs/vacation.md).  A
# row that is not enabled keeps its text for the next time; it goes with its user.
vacations = Table(
    "vacations",
    metadata,
    Column(
        "user_id",
        Integer,
        ForeignKey("users.id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    ),
    Column("enabled", Boolean, nullable=False),
    Column("subject", String(255), nullable=False),  # "" = "Auto: " + the original subject
    Column("body", Text, nullable=False),
    Column("starts", BigInteger, nullable=True),  # Unix seconds; NULL = at once
    Column("ends", BigInteger, nullable=True),  # Unix seconds, exclusive; NULL = no end
    Column("period", Integer, nullable=False),  # seconds between two replies to one sender
)


# version n -> the function that upgrades a connection from n to n + 1.  Each runs in the
# caller's transaction, so a failed upgrade leaves the old schema intact.
def _add_columns(conn: Connection, table: Table, names: list[str]) -> None:
    """ALTER TABLE ... ADD COLUMN for columns of ``table`` (portable: each column's type and
    server default are compiled for the connection's dialect)."""
    preparer = conn.dialect.identifier_preparer
    for name in names:
        column = table.c[name]
        ddl = (
            f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN"
            f" {preparer.format_column(column)} {column.type.compile(dialect=conn.dialect)}"
        )
        if column.server_default is not None:
            default = column.server_default.arg  # type: ignore[attr-defined]
            ddl += f" DEFAULT {default.compile(dialect=conn.dialect)} NOT NULL"
        conn.execute(text(ddl))


def _v1_to_v2(conn: Connection) -> None:
    _add_columns(conn, domains, ["secrets"])
    _add_columns(conn, users, ["secrets", "cram_md5", "apop_secret"])


def _v2_to_v3(conn: Connection) -> None:
    """Keep the facts, blank the credentials.  The caller (DirectoryBase.open) has copied
    and committed them into the credential store first: a crash before this transaction
    commits leaves version 2 with its credentials, and the next open copies again."""
    _add_columns(conn, users, ["has_password", "has_secrets"])
    conn.execute(
        users.update().values(
            has_password=users.c.password_hash.is_not(None),
            has_secrets=users.c.cram_md5.is_not(None),
        )
    )
    conn.execute(users.update().values(password_hash=None, cram_md5=None, apop_secret=None))


def _v3_to_v4(conn: Connection) -> None:
    _add_columns(conn, users, ["junk_spam"])
    vacations.create(conn, checkfirst=True)


MIGRATIONS: dict[int, Callable[[Connection], None]] = {
    1: _v1_to_v2,
    2: _v2_to_v3,
    3: _v3_to_v4,
}
CREDENTIALS_MOVED = 3  # the first version without credentials in users


def stored_version(conn: Connection) -> int | None:
    """The version recorded in the database, or None if it has no schema yet."""
    if not conn.dialect.has_table(conn, schema_version.name):
        return None
    return conn.execute(select(schema_version.c.version)).scalar()


def install(conn: Connection) -> None:
    """Create every table and record :data:`SCHEMA_VERSION` (tables that exist are kept)."""
    metadata.create_all(conn, checkfirst=True)
    conn.execute(schema_version.delete())
    conn.execute(schema_version.insert().values(version=SCHEMA_VERSION))


def upgrade(conn: Connection, version: int) -> None:
    """Run the migrations from ``version`` up to :data:`SCHEMA_VERSION`.

    Raises KeyError when a step is missing: an old schema we cannot upgrade.
    """
    while version < SCHEMA_VERSION:
        MIGRATIONS[version](conn)
        version += 1
    conn.execute(schema_version.update().values(version=SCHEMA_VERSION))
