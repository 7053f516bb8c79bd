"""The whole-home configuration check: what ``config check`` prints and ``run`` logs at start.

It lives above the roles because it asks each of them what it would refuse: qregex
patterns that never match, smtproutes lines, signatures, client TLS files.

``config check`` also opens the directory database (:func:`check_directory`): a
missing, unreadable or damaged database fails the check.  SIGHUP does not (it runs in
the supervisor's loop and must not wait for a database server).

The server certificate (control/servercert.pem) is checked here too
(:func:`certificate_problems`): missing, unreadable, not PEM, no key, a key that does not
match, expired or not yet valid is a problem, and ``run`` refuses to start on one
(:func:`check_startup`) rather than serve without STARTTLS (and so without AUTH on
submission); expiring within 14 days is a warning (:func:`check_warnings`).

Invariant: it never raises for a bad configuration; every problem is one line of text.
"""

from __future__ import annotations

import datetime as dt
import os

from qtoaster.config.loader import load_config
from qtoaster.core.errors import ConfigError
from qtoaster.core.home import Home


def check_config(home: Home, *, directory: bool = False) -> list[str]:
    """Every configuration problem of *home* as one line of text; [] if all is well.

    Beyond what `load_config` refuses, it reports what the server tolerates but an
    operator would want to know: qregex patterns that never match, a bad smtproutes
    line (the previous routes stay in force), unusable signatures or client TLS files;
    with ``directory``, a directory database that cannot be read (:func:`check_directory`).
    """
    try:
        config = load_config(home)
    except ConfigError as exc:
        return list(exc.problems)
    found = _tolerated_problems(home)
    found.extend(certificate_problems(home))
    if directory:
        found.extend(check_directory(home, config.settings.database_url))
    return found


def srs_key_problems(home: Home) -> list[str]:
    """The SRS key missing or holding no key (docs/srs.md): forwards would be deferred.
    A key this user may not read (the auth role's, under root) is not checked further."""
    from qtoaster.mailauth.srs import key_path, read_keys

    path = key_path(home)
    fix = "qtoaster srs keygen makes one, as run does at start; until then forwards wait"
    if not path.exists():
        return [f"{path}: missing ({fix})"]
    if not os.access(path, os.R_OK):
        return []
    try:
        read_keys(path)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        return [f"{path}: unusable: {exc} ({fix})"]
    return []


def check_startup(home: Home) -> list[str]:
    """What stops ``qtoaster run`` before it starts anything: certificate problems."""
    return certificate_problems(home)


def check_warnings(home: Home) -> list[str]:
    """What an operator should hear about without it being a problem (expiry soon, a
    PostgreSQL directory that keeps credentials in its own database, a control file
    name nobody reads)."""
    from qtoaster.config.control import unknown_control_files
    from qtoaster.config.settings import load_settings
    from qtoaster.directory.credentials import separation_warning
    from qtoaster.tls.certs import check_servercert

    warnings = check_servercert(home.control / "servercert.pem", dt.datetime.now(dt.UTC))[1]
    warnings += unknown_control_files(home.control)
    try:
        settings = load_settings(home.settings_file)
    except ConfigError:
        return warnings  # check_config reports it
    separate = separation_warning(settings.database_url, settings.credentials_url)
    srs = srs_key_problems(home) if settings.srs.enabled else []
    return warnings + ([separate] if separate else []) + srs


def certificate_problems(home: Home) -> list[str]:
    """control/servercert.pem's problems, then whether a TLS context loads at all.

    The second step (the server's own loading, tls.server) catches what parsing alone
    does not: an encrypted key, tlsserverciphers selecting no cipher.
    """
    from qtoaster.tls.certs import check_servercert
    from qtoaster.tls.server import TlsError, server_context

    path = home.control / "servercert.pem"
    problems = check_servercert(path, dt.datetime.now(dt.UTC))[0]
    if problems:
        return problems
    try:
        server_context(home.control, warn=lambda message: None)
    except TlsError as exc:
        return [f"{home.control}: TLS cannot be offered: {exc}"]
    return []


def check_directory(home: Home, url: str | None) -> list[str]:
    """The directory database's problems: missing, unreadable, damaged, no schema.

    Read only: it never creates or migrates the schema.  SQLite gets ``PRAGMA
    quick_check`` (every page read once: a damaged file fails here, not at the first
    RCPT); PostgreSQL a connection (at most its connect timeout) and one query.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from qtoaster.directory import schema
    from qtoaster.directory.engine import make_engine
    from qtoaster.directory.model import DirectoryError

    where = "directory database"
    try:
        engine = make_engine(home, url)
    except DirectoryError as exc:
        return [f"{where}: {exc}"]
    if engine.dialect.name == "sqlite":
        where = home.database.name
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                rows = [str(r[0]) for r in conn.exec_driver_sql("PRAGMA quick_check(5)")]
                if rows != ["ok"]:
                    return [f"{where}: damaged: {'; '.join(rows)}"]
            version = schema.stored_version(conn)
    except SQLAlchemyError as exc:
        # The driver's own message: SQLAlchemy's would quote the statement too.
        reason = getattr(exc, "orig", None) or type(exc).__name__
        return [f"{where}: cannot read it: {str(reason).strip()}"]
    finally:
        engine.dispose()
    if version is None:
        return [f"{where}: no directory schema (run qtoaster init)"]
    if version > schema.SCHEMA_VERSION:
        return [f"{where}: schema version {version} is newer than this qtoaster"]
    return []


def _tolerated_problems(home: Home) -> list[str]:
    from qtoaster.config.control import read_list
    from qtoaster.policy.checks.qregex import problems as qregex_problems
    from qtoaster.policy.signatures import Signatures
    from qtoaster.remote.routes import SmtpRoutes
    from qtoaster.tls.client import ClientTls

    found = list(qregex_problems(home.control))
    for check in (
        lambda: Signatures.load(home.control),
        lambda: SmtpRoutes.parse(read_list(home.control / "smtproutes")),
        lambda: ClientTls(home.control),
    ):
        try:
            check()
        except ConfigError as exc:
            found.extend(exc.problems)
    return found
