"""Create a new qtoaster home with commented defaults (``qtoaster init``).

Invariants: an existing home is never touched (anything but an absent path or an
empty directory is refused); the new home is built in a sibling temporary directory
and renamed into place, so a failure never leaves a half-made home behind.  Every
control file written holds qmail's default value, so deleting one changes nothing, except
control/servercert.pem: a self-signed certificate for --me (without it, no TLS is offered).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from qtoaster.config.settings import parse_listen
from qtoaster.core.errors import ConfigError
from qtoaster.core.home import Home

DEFAULT_SMTP = ["127.0.0.1:2525"]

SETTINGS_TEMPLATE = """\
# qtoaster.toml: service settings, i.e. what qmail kept in run scripts and tcpserver
# flags.  qmail's own settings live in control/ (same names and formats as qmail's),
# access rules in tcp.smtp.  Check your edits with: qtoaster config check
# Every setting is listed with its default; docs/configuration.md explains each one.

[listen]
# Addresses the SMTP listener binds: "HOST:PORT", "[IPv6]:PORT", or ":PORT" for every
# IPv4 address.  Ports below 1024 (25, 587, 465, 110, 995) need root to bind; started as
# root, qtoaster binds them and runs every role as its own user ([users] below).
smtp = {smtp}
# Submission (AUTH required before MAIL; usually ":587") and SMTPS (implicit TLS; ":465").
submission = {submission}
smtps = {smtps}
# POP3 (STLS offered; usually ":110") and POP3S (implicit TLS; ":995").
pop3 = {pop3}
pop3s = {pop3s}
# IMAP (STARTTLS offered; usually ":143") and IMAPS (implicit TLS; ":993").
imap = {imap}
imaps = {imaps}

[smtpd]
# smtpd worker processes sharing the listening sockets; 0 = one per CPU core.
workers = 0
# Most simultaneous SMTP connections in all (tcpserver -c), split evenly over the
# workers; a connection over it gets "421 ... too many connections" and is closed.
max_connections = 10000
# Most simultaneous connections from one client address (IPv6: per /64), counted by
# each worker.
max_per_ip = 50
# DATA must arrive at this many bytes a second at least: the whole message may take
# control/timeoutsmtpd plus its size over this rate (0: no minimum).
data_min_rate = 500
# Seconds a QMAILQUEUE program (simscan and the like, set in tcp.smtp) may take.
qmailqueue_timeout = 600

[pop3d]
# pop3d worker processes; 0 = two per CPU core (long POP3 sessions spread evenly).
workers = 0
# Seconds a command line (or a TLS handshake, at most 60) may take to arrive.
timeout = 1200

[imapd]
# imapd worker processes; 0 = two per CPU core (long IMAP sessions spread evenly).
workers = 0
# Seconds without a command before the session is logged out (RFC 9051: at least 1800).
timeout = 1800
# Seconds an IDLE may last without the client's DONE (RFC 2177: clients renew in 29 min).
idle_timeout = 1800
# LOGIN and AUTHENTICATE PLAIN/LOGIN without TLS (default: [auth] allow_plaintext).
# allow_plaintext_login = false
# Largest literal, APPEND's message included (APPENDLIMIT), in bytes: 50 MiB.
max_literal = 52428800
# Longest command line outside its literals, in bytes.
max_line = 65536

[database]
# The directory of domains and users.  Unset: SQLite file users.sqlite3 in this home.
# url = "postgresql+psycopg://qtoaster@dbhost/qtoaster"
# PostgreSQL: the database of password hashes and CRAM-MD5/APOP secrets, which only the
# auth role reads (docs/security.md); unset: a table in the directory's database.
# credentials_url = "postgresql+psycopg://qtoaster_auth@dbhost/qtoaster_credentials"

[chkuser]
# Refuse unknown recipients of our domains at RCPT time (chkuser): "domain" checks the
# domains whose unknown users bounce (not catch-all or delete domains), "always" every
# hosted domain, "off" none.  CHKUSER_START=ALWAYS|DOMAIN in tcp.smtp overrides it.
mode = "domain"
# Seconds to wait before each refusal, and added for each further one in a session.
error_delay = 1.0
error_delay_increase = 0.3

[auth]
# SMTP AUTH against the directory.  PLAIN and LOGIN send the password in clear: they are
# offered only on TLS connections unless allow_plaintext = true.
allow_plaintext = false
# Seconds before the first failure is answered; doubles with every further failure from
# the same address (up to 30 s), across connections.  A session ends after max_failures.
failure_delay = 1.0
max_failures = 3
# Logins checked at once for one client address (IPv6: its /64); one more gets a
# temporary refusal at once.  Raise it for many users behind one NAT address.
max_in_flight = 4

[srs]
# Forwarded mail leaves with its sender rewritten (SRS0=...@the forwarding domain), so
# that SPF at the next hop checks our domain; bounces to such addresses come back here
# and go on to the original sender (docs/srs.md).  The key: secrets/srs.key.
enabled = true
# domain = "forward.example.com"   # unset: the domain of the recipient that forwards
max_age_days = 21

[submission]
# On the submission port, MAIL FROM must be the authenticated user's own address.
restrict_sender = false

[rblsmtpd]
# DNS blocklists, as rblsmtpd -r/-a: a client listed in an rbl zone (TXT = the message;
# "zone:message" for A-record lists) gets rblsmtpd's refusing dialog, unless an antirbl
# zone lists it (A record).  RBLSMTPD from tcp.smtp decides alone: set and empty = never
# blocked (relay clients), non-empty = blocked with that text ("-text": 553).
rbl = []
antirbl = []
bounce = false        # -b: 553 instead of 451 for a listed client
fail_closed = false   # -c: a DNS failure counts as listed (451)
timeout = 60          # -t: seconds the refusing dialog may last; 0 = refuse at once

# Virus scanning with clamd (INSTREAM) at the end of DATA: a virus is refused with 554 and
# named in the log.  CLAMD="0" or "1" in tcp.smtp turns it off or on per client.
# [clamd]
# address = "127.0.0.1:3310"     # or a unix socket path, e.g. "/run/clamav/clamd.ctl"
# enabled = true                 # for every client (CLAMD in tcp.smtp overrides)
# timeout = 30                   # seconds for the whole scan
# max_bytes = 26214400           # scan at most this much (keep clamd's StreamMaxLength >= it)
# on_unavailable = "accept"      # clamd down: "accept" (unscanned, logged) or "tempfail" (451)

# Spam scoring with spamd (SPAMC): adds X-Spam-Status and X-Spam-Score headers, and refuses
# at or above reject_score (0: never).  SPAMD="0" or "1" in tcp.smtp per client.
# [spamd]
# address = "127.0.0.1:783"
# enabled = true
# timeout = 30
# max_bytes = 524288             # larger messages are not scored (spamc's limit)
# on_unavailable = "accept"
# reject_score = 0

[tls]
# Oldest TLS version accepted for STARTTLS and SMTPS: "TLSv1.2" or "TLSv1.3".
min_version = "TLSv1.2"

[queue]
# fsync each message (and its directory) before answering 250.  Turning this off
# loses mail on a crash: only for tests{demo_queue}.
fsync = {fsync}
# Bounce format: "qsbmf" (qmail's, the default toaster users know) or "dsn" (RFC 3464
# multipart/report, with qmail's text as its human-readable part).
bounce_format = "qsbmf"

[dkim]
# DKIM signing of our users' outgoing mail with the keys of qtoaster dkim (docs/dkim.md).
sign = true  # sign when the From domain has active keys
expiry = 0  # seconds a signature stays valid (x=); 0: no expiry
grace = 604800  # seconds a retired key stays published before dkim rotate deletes it
rotate_after = 15552000  # dkim rotate makes a new key once the active one is this old
algorithms = ["rsa", "ed25519"]  # what dkim keygen and rotate make

[dns]
# Name servers for remote delivery, "qtoaster dns check" and "qtoaster dkim rotate",
# "IP" or "IP:PORT"; empty: the system's resolv.conf.
nameservers = []
# Seconds one lookup may take, retries included; then it counts as a temporary failure.
timeout = 30

[remote]
# Port of the SMTP servers mail is relayed to (control/smtproutes may name another).
port = 25

[publish]
# What "qtoaster dns records DOMAIN" says to publish in DNS and "dns check" checks
# (docs/dns.md).  host: the mail host's name (default: control/me); addresses: its
# public IPv4/IPv6 addresses, for its A/AAAA, PTR and SPF records (empty: not listed).
# host = "mail.example.com"
addresses = []
# spf = "v=spf1 mx -all"            # replaces the computed SPF record
dmarc_policy = "quarantine"         # none, quarantine or reject
dmarc_rua = "postmaster@{{domain}}"   # DMARC aggregate reports ("": none)
tlsrpt_rua = "postmaster@{{domain}}"  # TLS failure reports ("": no TLS-RPT record)
mta_sts_mode = "testing"            # "enforce" once the certificate is valid; "none"
mta_sts_max_age = 604800            # seconds senders keep the MTA-STS policy

[users]
# Started as root, each role runs as its own system user (init as root creates them;
# docs/security.md says what each may read).  Started as anyone else, every role runs
# as that user.
smtpd = "qtoaster-smtpd"
pop3d = "qtoaster-pop3d"
imapd = "qtoaster-imapd"
send = "qtoaster-vmail"  # the queue manager and local delivery; owns the Maildirs
remote = "qtoaster-remote"
auth = "qtoaster-auth"
group = "qtoaster"  # every role
queue_group = "qtoaster-queue"  # smtpd and send
tls_group = "qtoaster-tls"  # roles that terminate TLS
auth_group = "qtoaster-authc"  # roles that ask the auth role
mailbox_group = "qtoaster-mbox"  # roles that ask the mailbox broker (pop3d, imapd, smtpd)

[log]
# One of: debug, info, warning, error.
level = "{level}"
"""

TCP_SMTP_TEMPLATE = """\
# tcp.smtp: which clients may connect to SMTP, and with which variables (tcprules(1)).
# One rule per line, ADDRESS:INSTRUCTIONS, no spaces around the colon or commas.
# INSTRUCTIONS: allow or deny, then optional ,VAR="value" (any repeated quote character).
# ADDRESS forms, most specific tried first: user@1.2.3.4, 1.2.3.4, ::1, =host.name,
# 1.2.3. (prefix ending in a dot), 1.2.3.1-22 (range), 10.0.0.0/8, 2001:db8::/32,
# 2001:db8: (IPv6 prefix: the rule reads 2001:db8::allow), =.example.com (host
# suffix), = (any client with a known host name), empty (everyone).
# RELAYCLIENT="" lets a client relay (skip control/rcpthosts); everybody else must be
# sending to our domains, or authenticate.  Read at start; check with qtoaster config check.
127.:allow,RELAYCLIENT=""
::1:allow,RELAYCLIENT=""
:allow
"""


def _control_files(me: str) -> dict[str, str]:
    """control/ contents: qmail's defaults written out, so operators see them.

    One is not qmail's default: databytes is 50 MB (the SIZE the toaster's EHLO example
    advertises), because qmail's 0 (unlimited) lets one client fill the queue's disk.
    """
    return {
        "me": me,
        "rcpthosts": me,
        "locals": f"{me}\nlocalhost",
        "defaultdomain": me,
        "smtpgreeting": me,
        "databytes": "50000000",
        "timeoutsmtpd": "1200",
        "queuelifetime": "604800",
        "concurrencylocal": "10",
        "concurrencyremote": "20",
    }


def _check_me(me: str) -> None:
    if not me or any(ch.isspace() or ch in "/@" for ch in me):
        raise ConfigError([f"--me {me!r}: must be this host's name, e.g. mail.example.com"])


def _refuse_existing(root: Path) -> None:
    if not root.exists() and not root.is_symlink():
        return
    if root.is_dir() and not root.is_symlink() and not any(root.iterdir()):
        return
    raise ConfigError([f"{root}: already exists; refusing to overwrite it"])


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(value) for value in values) + "]"


def _write_home(home: Home, me: str, listen: dict[str, list[str]], demo: bool) -> None:
    home.root.mkdir()
    home.settings_file.write_text(
        SETTINGS_TEMPLATE.format(
            smtp=_toml_list(listen["smtp"]),
            submission=_toml_list(listen["submission"]),
            smtps=_toml_list(listen["smtps"]),
            pop3=_toml_list(listen["pop3"]),
            pop3s=_toml_list(listen["pop3s"]),
            imap=_toml_list(listen.get("imap", [])),
            imaps=_toml_list(listen.get("imaps", [])),
            fsync="false" if demo else "true",
            demo_queue=" and throw-away demo homes like this one" if demo else "",
            level="debug" if demo else "info",
        )
    )
    home.control.mkdir()
    for name, value in _control_files(me).items():
        (home.control / name).write_text(value + "\n")
    # TLS (issue 4): a self-signed servercert.pem for --me (key + certificate, 0600), so
    # STARTTLS works from the start; `qtoaster cert install` replaces it (docs/tls.md).
    from qtoaster.tls.certs import self_signed, write_private

    write_private(home.control / "servercert.pem", self_signed(me))
    home.tcp_smtp.write_text(TCP_SMTP_TEMPLATE)
    home.domains.mkdir()
    home.run_dir.mkdir()
    # Written in parallel by the queue and directory helpers; imported here so that
    # `qtoaster config check` does not pay for them.
    from qtoaster.directory.store import create_directory
    from qtoaster.queue.store import QueueStore

    QueueStore.create(home.queue)
    create_directory(home)
    # The SRS key (docs/srs.md): forwarded mail's senders are rewritten from the start.
    from qtoaster.mailauth.srs import key_path, new_key, write_keys

    write_keys(key_path(home), [new_key()])


def default_listen(as_root: bool) -> dict[str, list[str]]:
    """Listeners of a new home: as root the standard ports on every IPv4 address (25, 587,
    465); otherwise SMTP alone on loopback port 2525 (a home to try things in)."""
    if as_root:
        return {
            "smtp": [":25"],
            "submission": [":587"],
            "smtps": [":465"],
            "pop3": [":110"],
            "pop3s": [":995"],
        }
    return {"smtp": list(DEFAULT_SMTP), "submission": [], "smtps": [], "pop3": [], "pop3s": []}


def init_home(
    home: Home,
    me: str,
    *,
    smtp: list[str] | None = None,
    submission: list[str] | None = None,
    smtps: list[str] | None = None,
    pop3: list[str] | None = None,
    pop3s: list[str] | None = None,
    imap: list[str] | None = None,
    imaps: list[str] | None = None,
    demo: bool = False,
    as_root: bool | None = None,
) -> None:
    """Create *home* for the host *me*; ConfigError if it exists or an argument is bad.

    *smtp*, *submission*, *smtps* list listen addresses; when none is given the defaults
    of :func:`default_listen` apply (*as_root* defaults to whether we run as root).
    *demo* makes a throw-away home: fsync off and debug logging (never for real mail).
    """
    chosen = {
        "smtp": smtp,
        "submission": submission,
        "smtps": smtps,
        "pop3": pop3,
        "pop3s": pop3s,
        "imap": imap,
        "imaps": imaps,
    }
    if all(values is None for values in chosen.values()):
        listen = default_listen(os.geteuid() == 0 if as_root is None else as_root)
    else:
        listen = {kind: values or [] for kind, values in chosen.items()}
    problems: list[str] = []
    try:
        _check_me(me)
    except ConfigError as exc:
        problems.extend(exc.problems)
    for kind, values in listen.items():
        for value in values:
            try:
                parse_listen(kind, value)
            except ValueError as exc:
                problems.append(f"--{kind} {exc}")
    _refuse_existing(home.root)
    if problems:
        raise ConfigError(problems)
    home.root.parent.mkdir(parents=True, exist_ok=True)
    staging = Home(home.root.with_name(f".{home.root.name}.init-{os.getpid()}"))
    shutil.rmtree(staging.root, ignore_errors=True)
    try:
        _write_home(staging, me, listen, demo)
        # rename(2) may replace an empty directory, which is all _refuse_existing allows.
        os.replace(staging.root, home.root)
    finally:
        shutil.rmtree(staging.root, ignore_errors=True)
