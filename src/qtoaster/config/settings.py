"""qtoaster.toml -> one frozen `Settings` (DESIGN.md section 7).

qtoaster.toml holds what qmail kept in run scripts and tcpserver flags: listen
addresses, worker counts, the database URL, queue durability, logging.  qmail's own
settings stay in control/ (see config.control).

Invariants: every key is known, typed and within bounds, or `load_settings` raises
one ConfigError naming every problem (``qtoaster.toml: [table] key: ...``).
Absent keys take the defaults below; nothing else reads the file.  A closed choice
(listener kind, chkuser mode, bounce format, ...) is held as a member of its `StrEnum`:
it compares equal to, hashes as and prints as its TOML string, so ``== "dsn"`` still works.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from qtoaster.config.httpsettings import HttpSettings, http_settings
from qtoaster.config.imapsettings import ImapSettings, imap_settings
from qtoaster.config.limitsettings import (
    GreylistSettings,
    RateLimitSettings,
    greylist_settings,
    ratelimit_settings,
)
from qtoaster.config.mailsettings import (
    DkimSettings,
    MailAuthSettings,
    PublishSettings,
    SrsSettings,
    dkim_settings,
    mailauth_settings,
    publish_settings,
    srs_settings,
)
from qtoaster.config.screensettings import (
    DnsblSettings,
    PregreetSettings,
    dnsbl_settings,
    pregreet_settings,
)
from qtoaster.config.tables import Tables as _Tables
from qtoaster.config.tables import choice as _choice
from qtoaster.config.tables import int_between as _int_between
from qtoaster.config.tables import is_bool as _is_bool
from qtoaster.config.tables import is_list as _is_list
from qtoaster.config.tables import seconds_between as _seconds_between
from qtoaster.core.errors import ConfigError


class ListenerKind(StrEnum):
    """[listen] keys: SMTP (STARTTLS offered), submission (RFC 6409: AUTH required before
    MAIL), SMTPS (implicit TLS, RFC 8314), POP3 (STLS offered), POP3S (implicit TLS), IMAP
    (STARTTLS offered) and IMAPS (implicit TLS)."""

    SMTP = "smtp"
    SUBMISSION = "submission"
    SMTPS = "smtps"
    POP3 = "pop3"
    POP3S = "pop3s"
    IMAP = "imap"
    IMAPS = "imaps"
    METRICS = "metrics"  # [listen] metrics: the Prometheus endpoint, one address
    HTTP = "http"  # [listen] http: the web admin and API (docs/http.md), one address


class ChkuserMode(StrEnum):
    """[chkuser] mode (spec 12): which hosted domains have their recipients checked."""

    DOMAIN = "domain"  # domains whose unknown users bounce
    ALWAYS = "always"  # every hosted domain
    OFF = "off"  # none (CHKUSER_START may still turn it on per connection)


class BounceFormat(StrEnum):
    """[queue] bounce_format: qmail's QSBMF text or an RFC 3464 delivery status notification."""

    QSBMF = "qsbmf"
    DSN = "dsn"


class OnUnavailable(StrEnum):
    """[clamd]/[spamd] on_unavailable: what a scanner that is down means for the message."""

    ACCEPT = "accept"  # accept it unscanned (logged)
    TEMPFAIL = "tempfail"  # 451: the client tries again later


class TlsVersion(StrEnum):
    """[tls] min_version: the oldest TLS version offered (RFC 8996 retired 1.0 and 1.1)."""

    TLSV1_2 = "TLSv1.2"
    TLSV1_3 = "TLSv1.3"


class OnOff(StrEnum):
    ON = "on"
    OFF = "off"


class DaneMode(StrEnum):
    AUTO = "auto"  # on when [remote] resolver_validates says the resolver validates DNSSEC
    ON = "on"
    OFF = "off"


class LogLevel(StrEnum):
    """[log] level, a name of the logging module's levels in lower case."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


LISTENER_KINDS = tuple(
    k for k in ListenerKind if k not in (ListenerKind.METRICS, ListenerKind.HTTP)
)
SMTPD_KINDS = (ListenerKind.SMTP, ListenerKind.SUBMISSION, ListenerKind.SMTPS)
POP3_KINDS = (ListenerKind.POP3, ListenerKind.POP3S)
IMAP_KINDS = (ListenerKind.IMAP, ListenerKind.IMAPS)
DEFAULT_LISTEN = {ListenerKind.SMTP: ("127.0.0.1:2525",)}
LOG_LEVELS = tuple(LogLevel)
MAX_WORKERS = 256
MAX_CONNECTIONS = 1_000_000


@dataclass(frozen=True, slots=True)
class Listener:
    kind: ListenerKind
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_listen(kind: str, value: str) -> Listener:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``:PORT`` (all IPv4 addresses, tcpserver's ``0``).

    HOST must be an IP address literal; PORT 0..65535 (0 = any free port, for tests).
    *kind* is a `ListenerKind` value (ValueError otherwise).
    """
    listener_kind = ListenerKind(kind)
    if value.startswith("["):
        host, sep, port_text = value[1:].partition("]:")
        if not sep:
            raise ValueError(f"{value!r}: expected [IPv6]:PORT")
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep:
            raise ValueError(f"{value!r}: expected HOST:PORT")
        if ":" in host:
            raise ValueError(f"{value!r}: write IPv6 addresses in brackets, [{host}]:{port_text}")
        host = host or "0.0.0.0"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{value!r}: {host!r} is not an IP address") from None
    if value.startswith("[") and address.version != 6:
        raise ValueError(f"{value!r}: only IPv6 addresses go in brackets")
    if not (port_text.isascii() and port_text.isdigit()) or int(port_text) > 65535:
        raise ValueError(f"{value!r}: port must be a number from 0 to 65535")
    return Listener(kind=listener_kind, host=address.compressed, port=int(port_text))


def parse_metrics_listen(value: str) -> Listener:
    """[listen] metrics / ``run --metrics``: ``HOST:PORT`` or ``[IPv6]:PORT`` as written,
    or a bare ``PORT`` (or ``:PORT``) on 127.0.0.1: the endpoint is not public unless the
    operator names an address."""
    text = value.removeprefix(":")
    if text.isascii() and text.isdigit():
        value = f"127.0.0.1:{text}"
    return parse_listen(ListenerKind.METRICS, value)


def parse_http_listen(value: str) -> Listener:
    """[listen] http / ``run --http``: as [listen] metrics (a bare PORT: 127.0.0.1)."""
    text = value.removeprefix(":")
    if text.isascii() and text.isdigit():
        value = f"127.0.0.1:{text}"
    return parse_listen(ListenerKind.HTTP, value)


def _is_metrics_listen(value: Any) -> str | None:
    if not isinstance(value, str):
        return 'must be "HOST:PORT" or "PORT" (127.0.0.1)'
    try:
        parse_metrics_listen(value)
    except ValueError as exc:
        return str(exc)
    return None


CHKUSER_MODES = tuple(ChkuserMode)


@dataclass(frozen=True, slots=True)
class RoleUsers:
    """[users]: the system users and groups the roles run as when started as root
    (docs/security.md, decision 0007). Started by anyone else, every role runs as that user."""

    smtpd: str = "qtoaster-smtpd"
    pop3d: str = "qtoaster-pop3d"
    imapd: str = "qtoaster-imapd"
    send: str = "qtoaster-vmail"  # the queue manager and local delivery; owns the Maildirs
    remote: str = "qtoaster-remote"
    auth: str = "qtoaster-auth"
    group: str = "qtoaster"  # every role: reads the settings, control files, the directory
    queue_group: str = "qtoaster-queue"  # smtpd and send: the queue
    tls_group: str = "qtoaster-tls"  # smtpd, pop3d and imapd: the TLS private key
    # smtpd, pop3d, imapd, mailbox, send: may connect to the auth role
    auth_group: str = "qtoaster-authc"
    # pop3d, imapd and smtpd: may connect to the mailbox broker
    mailbox_group: str = "qtoaster-mbox"
    metrics: str = "qtoaster-metrics"  # the metrics role (HTTP): reads run/metrics/ only
    http: str = "qtoaster-http"  # the http role (web admin, API): asks its executor


@dataclass(frozen=True, slots=True)
class Settings:
    listeners: tuple[Listener, ...]
    smtpd_workers: int
    max_connections: int
    database_url: str | None
    fsync: bool
    log_level: LogLevel
    # chkuser (spec 12): "domain" checks hosted domains whose unknown users bounce,
    # "always" every hosted domain, "off" none; CHKUSER_START overrides per connection.
    # [database] credentials_url: where password hashes and CRAM-MD5/APOP secrets live
    # when the directory is PostgreSQL (docs/directory.md); None = the directory's database.
    credentials_url: str | None = None
    chkuser_mode: ChkuserMode = ChkuserMode.DOMAIN
    chkuser_delay: float = 1.0  # seconds before each rejection (CHKUSER_ERROR_DELAY)
    chkuser_delay_increase: float = 0.3  # added per rejection (CHKUSER_ERROR_DELAY_INCREASE)
    # SMTP AUTH (docs/tls.md): plain-text mechanisms without TLS only if allowed; failures
    # are delayed (doubling per failure from one address) and end the session after a few.
    auth_allow_plaintext: bool = False
    auth_failure_delay: float = 1.0
    auth_max_failures: int = 3
    auth_max_in_flight: int = 4  # logins being checked at once from one address (/64)
    submission_restrict_sender: bool = False  # MAIL FROM must be the user's own address
    tls_min_version: TlsVersion = TlsVersion.TLSV1_2
    bounce_format: BounceFormat = BounceFormat.QSBMF  # or DSN (RFC 3464)
    send_delay_warning: float = 14400.0  # [send] delay_warning: seconds queued, 0 = none
    dns_nameservers: tuple[str, ...] = ()  # empty: the system resolver
    dns_timeout: float = 30.0  # seconds one lookup may take, retries included
    remote_port: int = 25
    # Outbound transport security (docs/remote.md): MTA-STS (RFC 8461) and DANE (RFC 7672).
    remote_mta_sts: OnOff = OnOff.ON
    remote_dane: DaneMode = DaneMode.AUTO
    remote_resolver_validates: bool = False  # [dns] nameservers validate DNSSEC (AD bit)
    remote_ca_file: str | None = None  # extra CAs: MTA-STS policy fetches and MX certificates
    remote_mta_sts_port: int = 443  # for tests only: the HTTPS port of policy fetches
    pop3d_workers: int = 0  # 0: two per core
    rbl_zones: tuple[str, ...] = ()  # rblsmtpd -r (zone, or zone:text)
    antirbl_zones: tuple[str, ...] = ()  # rblsmtpd -a
    rbl_bounce: bool = False  # -b: 553 instead of 451 for an RBL hit
    rbl_fail_closed: bool = False  # -c: a DNS failure blocks (temporarily)
    rbl_timeout: int = 60  # -t: seconds a blocked client's dialog may last; 0: refuse at once
    qmailqueue_timeout: int = 600  # seconds a QMAILQUEUE program may take
    max_per_ip: int = 50  # connections from one client address (IPv6: /64), per smtpd worker
    # DATA must arrive at this many bytes/s on average (timeoutsmtpd + size/rate); 0: off
    data_min_rate: int = 500
    pop3d_timeout: int = 1200  # seconds a POP3 command may take to arrive (spec 19.1)
    clamd: ScannerSettings | None = None  # [clamd] table present and address set
    spamd: ScannerSettings | None = None
    users: RoleUsers = RoleUsers()
    publish: PublishSettings = field(default_factory=PublishSettings)
    srs: SrsSettings = field(default_factory=SrsSettings)
    dkim: DkimSettings = field(default_factory=DkimSettings)
    mailauth: MailAuthSettings = field(default_factory=MailAuthSettings)
    imapd: ImapSettings = field(default_factory=ImapSettings)
    metrics_listen: Listener | None = None  # [listen] metrics: off when absent
    http_listen: Listener | None = None  # [listen] http: off when absent
    http: HttpSettings = field(default_factory=HttpSettings)
    greylist: GreylistSettings = field(default_factory=GreylistSettings)
    ratelimit: RateLimitSettings = field(default_factory=RateLimitSettings)
    pregreet: PregreetSettings = field(default_factory=PregreetSettings)
    dnsbl: DnsblSettings = field(default_factory=DnsblSettings)
    # [log] file: the supervisor writes every role's lines there (docs/logging.md), rotated
    # at max_bytes with keep old files; None: stderr (journald under systemd).
    log_file: str | None = None
    log_max_bytes: int = 10 << 20
    log_keep: int = 5


@dataclass(frozen=True, slots=True)
class ScannerSettings:
    """[clamd] or [spamd]: where the daemon is and what to do with its answers."""

    address: str  # "HOST:PORT" or a unix socket path
    enabled: bool = True  # for every connection; CLAMD/SPAMD in tcp.smtp override it
    timeout: float = 30.0
    max_bytes: int = 25 << 20  # clamd: scan this much; spamd: skip larger messages
    on_unavailable: OnUnavailable = OnUnavailable.ACCEPT  # or TEMPFAIL (451)
    reject_score: float = 0.0  # spamd: refuse at or above this score; 0 = never refuse


_seconds = _seconds_between(0, 60)


def _scanner(tables: _Tables, name: str, max_bytes: int) -> ScannerSettings | None:
    address = tables.get(name, "address", _is_scanner_address, None)
    settings = ScannerSettings(
        address=address or "",
        enabled=tables.get(name, "enabled", _is_bool, True),
        timeout=float(tables.get(name, "timeout", _seconds_between(0.1, 3600), 30.0)),
        max_bytes=tables.get(name, "max_bytes", _int_between(1024, 1 << 30), max_bytes),
        on_unavailable=OnUnavailable(
            tables.get(name, "on_unavailable", _choice(OnUnavailable), OnUnavailable.ACCEPT)
        ),
        reject_score=float(tables.get(name, "reject_score", _is_score, 0.0)),
    )
    return settings if address else None


def _users(tables: _Tables) -> RoleUsers:
    defaults = RoleUsers()
    names = {
        name: tables.get("users", name, _is_system_name, getattr(defaults, name))
        for name in RoleUsers.__dataclass_fields__
    }
    return RoleUsers(**names)


def _is_system_name(value: Any) -> str | None:
    """A user or group name useradd accepts (Debian's NAME_REGEX for system accounts)."""
    ok = isinstance(value, str) and re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", value) is not None
    return None if ok else "must be a user or group name (a-z, 0-9, _ and -, at most 32)"


def _is_scanner_address(value: Any) -> str | None:
    if not isinstance(value, str):
        return 'must be "HOST:PORT" or a unix socket path'
    from qtoaster.config.endpoints import parse_address

    try:
        parse_address(value)
    except ValueError as exc:
        return f'must be "HOST:PORT" or a unix socket path ({exc})'
    return None


def _is_score(value: Any) -> str | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 10000
    return None if ok else "must be a score from 0 to 10000 (0: never refuse)"


def _is_zones(value: Any) -> str | None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return 'must be a list of "zone" or "zone:message" strings'
    from qtoaster.config.endpoints import parse_sources

    try:
        parse_sources(value, [])
    except ConfigError as exc:
        return "; ".join(exc.problems)
    return None


def _is_nameservers(value: Any) -> str | None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return 'must be a list of "IP" or "IP:PORT" strings'
    if not value:
        return None
    from qtoaster.config.endpoints import parse_nameserver

    for text in value:
        try:
            parse_nameserver(text)
        except ValueError as exc:
            return f'must be a list of "IP" or "IP:PORT" strings ({text!r}: {exc})'
    return None


def _is_url(value: Any) -> str | None:
    return None if isinstance(value, str) and value.strip() else "must be a non-empty string"


def _listeners(tables: _Tables) -> tuple[Listener, ...]:
    result: list[Listener] = []
    for kind in LISTENER_KINDS:
        values = tables.get("listen", kind, _is_list, list(DEFAULT_LISTEN.get(kind, ())))
        for value in values:
            try:
                listener = parse_listen(kind, value)
            except ValueError as exc:
                tables.problems.append(f"{tables.source}: [listen] {kind}: {exc}")
                continue
            if listener in result:
                tables.problems.append(f"{tables.source}: [listen] {kind}: {value!r} given twice")
                continue
            result.append(listener)
    return tuple(result)


def _metrics_listen(tables: _Tables) -> Listener | None:
    value = tables.get("listen", "metrics", _is_metrics_listen, None)
    return None if value is None else parse_metrics_listen(value)


def _http_listen(tables: _Tables) -> Listener | None:
    def valid(value: Any) -> str | None:
        if not isinstance(value, str):
            return 'must be "HOST:PORT" or "PORT" (127.0.0.1)'
        try:
            parse_http_listen(value)
        except ValueError as exc:
            return str(exc)
        return None

    value = tables.get("listen", "http", valid, None)
    return None if value is None else parse_http_listen(value)


def settings_from_toml(data: dict[str, Any], source: str = "qtoaster.toml") -> Settings:
    """Validate parsed TOML; ConfigError listing every problem."""
    tables = _Tables(data, source)
    settings = Settings(
        listeners=_listeners(tables),
        smtpd_workers=tables.get("smtpd", "workers", _int_between(0, MAX_WORKERS), 0),
        max_connections=tables.get(
            "smtpd", "max_connections", _int_between(1, MAX_CONNECTIONS), 10000
        ),
        database_url=tables.get("database", "url", _is_url, None),
        credentials_url=tables.get("database", "credentials_url", _is_url, None),
        fsync=tables.get("queue", "fsync", _is_bool, True),
        log_level=LogLevel(tables.get("log", "level", _choice(LogLevel), LogLevel.INFO)),
        log_file=tables.get("log", "file", _is_url, None),
        log_max_bytes=tables.get("log", "max_bytes", _int_between(4096, 1 << 40), 10 << 20),
        log_keep=tables.get("log", "keep", _int_between(1, 1000), 5),
        chkuser_mode=ChkuserMode(
            tables.get("chkuser", "mode", _choice(ChkuserMode), ChkuserMode.DOMAIN)
        ),
        chkuser_delay=float(tables.get("chkuser", "error_delay", _seconds, 1.0)),
        chkuser_delay_increase=float(tables.get("chkuser", "error_delay_increase", _seconds, 0.3)),
        auth_allow_plaintext=tables.get("auth", "allow_plaintext", _is_bool, False),
        auth_failure_delay=float(tables.get("auth", "failure_delay", _seconds, 1.0)),
        auth_max_failures=tables.get("auth", "max_failures", _int_between(1, 100), 3),
        auth_max_in_flight=tables.get("auth", "max_in_flight", _int_between(1, 10000), 4),
        submission_restrict_sender=tables.get("submission", "restrict_sender", _is_bool, False),
        tls_min_version=TlsVersion(
            tables.get("tls", "min_version", _choice(TlsVersion), TlsVersion.TLSV1_2)
        ),
        bounce_format=BounceFormat(
            tables.get("queue", "bounce_format", _choice(BounceFormat), BounceFormat.QSBMF)
        ),
        send_delay_warning=float(
            tables.get("send", "delay_warning", _seconds_between(0, 30 * 86400), 14400.0)
        ),
        dns_nameservers=tuple(tables.get("dns", "nameservers", _is_nameservers, [])),
        dns_timeout=float(tables.get("dns", "timeout", _seconds_between(0.1, 300), 30.0)),
        remote_port=tables.get("remote", "port", _int_between(1, 65535), 25),
        remote_mta_sts=OnOff(tables.get("remote", "mta_sts", _choice(OnOff), OnOff.ON)),
        remote_dane=DaneMode(tables.get("remote", "dane", _choice(DaneMode), DaneMode.AUTO)),
        remote_resolver_validates=tables.get("remote", "resolver_validates", _is_bool, False),
        remote_ca_file=tables.get("remote", "ca_file", _is_url, None),
        remote_mta_sts_port=tables.get("remote", "mta_sts_port", _int_between(1, 65535), 443),
        pop3d_workers=tables.get("pop3d", "workers", _int_between(0, MAX_WORKERS), 0),
        rbl_zones=tuple(tables.get("rblsmtpd", "rbl", _is_zones, [])),
        antirbl_zones=tuple(tables.get("rblsmtpd", "antirbl", _is_zones, [])),
        rbl_bounce=tables.get("rblsmtpd", "bounce", _is_bool, False),
        rbl_fail_closed=tables.get("rblsmtpd", "fail_closed", _is_bool, False),
        rbl_timeout=tables.get("rblsmtpd", "timeout", _int_between(0, 3600), 60),
        qmailqueue_timeout=tables.get("smtpd", "qmailqueue_timeout", _int_between(1, 86400), 600),
        max_per_ip=tables.get("smtpd", "max_per_ip", _int_between(1, MAX_CONNECTIONS), 50),
        data_min_rate=tables.get("smtpd", "data_min_rate", _int_between(0, 1 << 30), 500),
        pop3d_timeout=tables.get("pop3d", "timeout", _int_between(1, 86400), 1200),
        clamd=_scanner(tables, "clamd", 25 << 20),
        spamd=_scanner(tables, "spamd", 512 << 10),
        users=_users(tables),
        publish=publish_settings(tables),
        dkim=dkim_settings(tables),
        srs=srs_settings(tables),
        mailauth=mailauth_settings(tables),
        metrics_listen=_metrics_listen(tables),
        http_listen=_http_listen(tables),
        http=http_settings(tables),
        greylist=greylist_settings(tables),
        ratelimit=ratelimit_settings(tables),
        pregreet=pregreet_settings(tables),
        dnsbl=dnsbl_settings(tables),
    )
    settings = replace(settings, imapd=imap_settings(tables, settings.auth_allow_plaintext))
    tables.unknown()
    if tables.problems:
        raise ConfigError(tables.problems)
    return settings


def load_settings(path: Path) -> Settings:
    """Read and validate qtoaster.toml; a missing or unparsable file is a ConfigError."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([f"{path}: missing (create a home with qtoaster init)"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: unable to read: {exc.strerror or exc}"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError([f"{path.name}: {exc}"]) from None
    return settings_from_toml(data, source=path.name)
