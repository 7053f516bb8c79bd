"""Everything a session needs that is shared by the sessions of one worker.

Built once from a :class:`Config` (at start and on every SIGHUP) and swapped as a
whole: a session keeps the context it started with, like a qmail-smtpd process
that read its controls when tcpserver started it (spec section 1).  What must outlive
a reload (the directory, its threads, the auth role's client) is a :class:`WorkerShared`.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from qtoaster.auth.client import AuthClient
from qtoaster.broker.client import quota_percent
from qtoaster.broker.protocol import socket_path as broker_socket_path
from qtoaster.config.loader import Config
from qtoaster.core.domain import domain_key
from qtoaster.core.errors import TemporaryFailure
from qtoaster.directory.cache import CachedLookups
from qtoaster.directory.lazy import LazyDirectory
from qtoaster.mailauth.srs import KeyRing, LocalSrs, SrsError
from qtoaster.mailauth.srs import key_path as srs_key_path
from qtoaster.policy.checks.chkuser import Chkuser, ChkuserSettings
from qtoaster.policy.checks.clamd import Clamd
from qtoaster.policy.checks.databytes import Databytes
from qtoaster.policy.checks.dnsbl import DnsblCheck
from qtoaster.policy.checks.greylist import Greylist
from qtoaster.policy.checks.hops import Hops
from qtoaster.policy.checks.mailauth import Dmarc, FcrdnsCheck, MailAuth, Spf
from qtoaster.policy.checks.mfcheck import Mfcheck, SenderDomains
from qtoaster.policy.checks.pregreet import Pipelining, Pregreet
from qtoaster.policy.checks.qregex import Qregex
from qtoaster.policy.checks.ratelimit import VARIABLES as RATELIMIT_VARIABLES
from qtoaster.policy.checks.ratelimit import RateLimit
from qtoaster.policy.checks.rblsmtpd import Rblsmtpd
from qtoaster.policy.checks.rcpthosts import Rcpthosts
from qtoaster.policy.checks.signatures import Signatures as SignaturesCheck
from qtoaster.policy.checks.spamd import Spamd
from qtoaster.policy.checks.srs import Reverser, SrsCheck
from qtoaster.policy.checks.tarpit import Tarpit
from qtoaster.policy.greylist import PassList
from qtoaster.policy.pipeline import Check, Pipeline
from qtoaster.policy.signatures import Signatures
from qtoaster.policy.state import LazyPolicyState, SqlPolicyState
from qtoaster.policy.verdict import Stage
from qtoaster.queue.store import QueueStore
from qtoaster.tls.server import TlsError, read_tls_controls, server_context

if TYPE_CHECKING:
    from qtoaster.config.settings import Settings
    from qtoaster.mailauth.verifier import Verifier
    from qtoaster.policy.dnsbl import Dnsbl
    from qtoaster.policy.rbl import Rbl

log = logging.getLogger("qtoaster.smtpd")

# Variables a tcp.smtp rule or the process environment may set for a connection
# (tcp-environ(5) and the toaster's Table 2); read once, never while serving.
_PROCESS_VARIABLES = (
    "RELAYCLIENT",
    "QMAILQUEUE",
    "RBLSMTPD",
    "NOBADHELO",
    "LOGREGEX",
    "MFCHECK",
    "TARPITCOUNT",
    "TARPITDELAY",
    "NOTARPIT",
    "EXECUTABLEOK",
    "CLAMD",
    "SPAMD",
    "MAILAUTH",
    "DATABYTES",
    "TCPREMOTEINFO",
    "CHKUSER_START",
    "CHKUSER_RCPTLIMIT",
    "CHKUSER_WRONGRCPTLIMIT",
    "CHKUSER_MBXQUOTA",
    "CHKUSER_IDENTIFY",
    "SMTPS",
    "TLSCIPHERS",
    "GREYLIST",
    "RATELIMIT",
    *RATELIMIT_VARIABLES,
    "PREGREET",
    "DNSBL",
)


@dataclass
class WorkerShared:
    """The worker's long-lived pieces: directory, its threads, the auth role's client."""

    directory: LazyDirectory  # routing and chkuser; credentials only through ``auth``
    lookups: CachedLookups
    lookup_executor: Executor
    auth: AuthClient  # logins are checked (and throttled) by the auth role
    cram_available: bool = False  # the auth role says CRAM-MD5 can be offered (polled)
    extra: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SmtpdContext:
    config: Config
    pipeline: Pipeline
    store: QueueStore
    executor: Executor
    process_env: Mapping[str, str]
    hostname_pid: str
    shared: WorkerShared | None = None
    tls: ssl.SSLContext | None = None  # None: no certificate, no STARTTLS/SMTPS
    tls_problem: str = "missing certificate"  # why not, for ``454 TLS <problem> (#4.3.0)``
    # control/tlsclients, when it exists: certificates are checked for relaying (spec 7.3);
    # read once per configuration (start and SIGHUP), not per handshake.  None: no file.
    tls_clients: frozenset[str] | None = None
    signatures: Signatures | None = None  # control/signatures; None: no scan while in DATA

    @classmethod
    def build(
        cls, config: Config, executor: Executor, shared: WorkerShared | None = None
    ) -> SmtpdContext:
        """The context for ``config``; without ``shared`` there is no directory (tests
        of the protocol alone): rcpthosts decides alone and AUTH is not available."""
        controls = config.controls
        settings = config.settings
        recipient: Check = Rcpthosts(controls)
        if shared is not None:  # chkuser decides even when "off": CHKUSER_START may enable it
            recipient = Chkuser(
                controls,
                shared.lookups,
                shared.lookup_executor,
                ChkuserSettings(
                    settings.chkuser_mode, settings.chkuser_delay, settings.chkuser_delay_increase
                ),
                # The mailbox broker reads the Maildir: smtpd cannot (decision 0007).
                quota_percent(broker_socket_path(config.home)),
                srs=settings.srs.enabled,
            )
        signatures = Signatures.load(config.home.control)
        srs = _srs_check(config, executor, shared)
        pipeline = Pipeline(_checks(config, recipient, signatures, srs))
        store = QueueStore(config.home.queue, fsync=config.settings.fsync)
        env = {k: os.environ[k] for k in _PROCESS_VARIABLES if k in os.environ}
        tls, problem, tls_files = None, "missing certificate", None
        try:
            tls_files = read_tls_controls(config.home.control)
            tls = server_context(
                tls_files,
                env_ciphers=env.get("TLSCIPHERS"),
                min_version=settings.tls_min_version,
            )
        except TlsError as exc:
            problem = str(exc)
            log.warning("smtpd no TLS: %s", exc)
        return cls(
            config,
            pipeline,
            store,
            executor,
            env,
            f"{controls.me}:{os.getpid()}",
            shared,
            tls,
            problem,
            tls_files.tlsclients if tls_files and tls_files.tlsclients_exists else None,
            signatures,
        )


def _rbl(settings: Settings) -> Rbl | None:
    """One blocklist resolver per worker (its cache is shared by every session)."""
    if not settings.rbl_zones and not settings.antirbl_zones:
        return None
    from qtoaster.config.endpoints import parse_sources
    from qtoaster.policy.rbl import Rbl

    return Rbl(
        parse_sources(settings.rbl_zones, settings.antirbl_zones),
        nameservers=settings.dns_nameservers,
        bounce=settings.rbl_bounce,
        fail_closed=settings.rbl_fail_closed,
    )


# One DNSBL scorer (its cache of scores) per worker, kept across reloads while its
# settings stay the same.
_dnsbl: tuple[tuple[object, ...], Dnsbl] | None = None


def _dnsbl_scorer(settings: Settings) -> Dnsbl | None:
    global _dnsbl
    if not settings.dnsbl.sites:
        return None
    from qtoaster.policy.dnsbl import Dnsbl

    key = (settings.dnsbl, settings.dns_nameservers)
    if _dnsbl is None or _dnsbl[0] != key:
        _dnsbl = (key, Dnsbl(settings.dnsbl, nameservers=settings.dns_nameservers))
    return _dnsbl[1]


def _srs_check(config: Config, executor: Executor, shared: WorkerShared | None) -> SrsCheck | None:
    """The srs check, asking whoever may read the key: this process when it may (one
    user for every role), else the auth role. None when SRS is off, or when neither
    (a worker without a directory: no auth role's client either)."""
    if not config.settings.srs.enabled:
        return None
    path = srs_key_path(config.home)
    reverse: Reverser
    if os.access(path, os.R_OK):
        local = LocalSrs(KeyRing(path), config.settings.srs.max_age_days)

        async def reverse(address: str) -> str:
            return local.reverse(address)  # an HMAC and a stat(): no thread needed
    elif shared is not None:
        auth = shared.auth

        async def reverse(address: str) -> str:
            answer = await auth.srs_reverse(address)
            if answer.temporary:
                raise TemporaryFailure(answer.reason)
            if not answer.ok:
                raise SrsError(answer.reason, address)
            return answer.address
    else:
        return None
    locals_ = frozenset(domain.lower() for domain in config.controls.locals)
    lookups = shared.lookups if shared is not None else None

    def local_domain(domain: str) -> bool:
        hosted = lookups is not None and lookups.hosts_domain(domain)
        return hosted or domain_key(domain) in locals_

    return SrsCheck(reverse, local_domain, shared.lookup_executor if shared else executor)


# One verifier (its threads, its DNS cache) per worker, kept across reloads while its
# settings stay the same; a changed one replaces it (the old one finishes its work).
_verifier: tuple[tuple[object, ...], Verifier] | None = None


def _mailauth(config: Config) -> MailAuth:
    global _verifier
    from qtoaster.mailauth.dnsquery import Lookup
    from qtoaster.mailauth.verifier import Verifier

    settings = config.settings
    auth = settings.mailauth
    key = (settings.dns_nameservers, auth.timeout, auth.workers, auth.max_bytes, config.controls.me)
    if _verifier is None or _verifier[0] != key:
        lookup = Lookup.build(settings.dns_nameservers, auth.timeout)
        verifier = Verifier(
            lookup, config.controls.me, workers=auth.workers, max_bytes=auth.max_bytes
        )
        if _verifier is not None:
            _verifier[1].close()
        _verifier = (key, verifier)
    return MailAuth(auth, _verifier[1])


# The shared policy state (greylisting, rate limits) and its threads, one per worker, kept
# across reloads while the home and the database stay the same; opened on first use.
STATE_THREADS = 2
_state: tuple[tuple[object, ...], LazyPolicyState, Executor] | None = None


def _policy_state(config: Config) -> tuple[LazyPolicyState, Executor]:
    global _state
    home, url, grey = config.home, config.settings.database_url, config.settings.greylist
    key = (home.root, url, grey.max_age, grey.retry_window)
    if _state is None or _state[0] != key:
        executor = _state[2] if _state is not None else None
        if executor is None:
            executor = ThreadPoolExecutor(STATE_THREADS, thread_name_prefix="policy-state")
        lazy = LazyPolicyState(lambda: SqlPolicyState.open(home, url, grey))
        _state = (key, lazy, executor)
    return _state[1], _state[2]


def _checks(
    config: Config, recipient: Check, signatures: Signatures | None, srs: SrsCheck | None = None
) -> list[Check]:
    """The policy checks, each stage's in the toaster's order (spec 4; docs/policy.md):
    CONNECT rblsmtpd, dnsbl, ratelimit; MAIL databytes, mfcheck, ratelimit; RCPT dnsbl,
    pregreet, pipelining, qregex (badhelo, badmailfrom, badmailto), srs, relay/chkuser,
    greylist, ratelimit, tarpit last; DATA databytes, hops, signatures, spf, fcrdns, dmarc,
    clamd, spamd.  A new check is one module under policy/checks/ and one line here."""
    control = config.home.control
    settings = config.settings
    domains = SenderDomains(settings.dns_nameservers)
    state, state_threads = _policy_state(config)
    me = config.controls.me
    checks: list[Check] = [
        Rblsmtpd(_rbl(settings)),
        DnsblCheck(_dnsbl_scorer(settings)),  # CONNECT: the score; RCPT: its refusal
        Pregreet(),  # RCPT: what the session saw before the greeting and EHLO
        Pipelining(),
        Databytes(config.controls.databytes),  # MAIL (SIZE=) and DATA (bytes received)
        Mfcheck.from_control_dir(control, domains),
        # CONNECT after rblsmtpd, MAIL last (issue 18)
        RateLimit(settings.ratelimit, state, state_threads, _EARLY, me),
    ]
    qregex = Qregex.from_control_dir(control)
    if qregex.active:
        checks.append(qregex)
    if srs is not None:  # before chkuser, which takes its word for SRS local parts
        checks.append(srs)
    mailauth = _mailauth(config)
    greylist = Greylist(
        settings.greylist,
        state,
        state_threads,
        _passlist(control),
        # SPF at RCPT only where inbound mail authentication is on (it asks DNS).
        spf=_spf_result(mailauth) if settings.mailauth.policy.enabled else None,
    )
    # After the recipient checks (an unknown or relayed recipient is refused first and not
    # counted), before tarpit, which must stay last.
    late = RateLimit(settings.ratelimit, state, state_threads, frozenset({Stage.RCPT}), me)
    checks += [recipient, greylist, late, Tarpit.from_control_dir(control)]
    checks.append(Hops())
    if signatures is not None:
        checks.append(SignaturesCheck())
    # Authentication before the scanners: a forged or DNS-failing message is refused
    # for a few DNS answers (mostly cached) before it costs a clamd or spamd scan.
    checks += [Spf(mailauth), FcrdnsCheck(mailauth), Dmarc(mailauth)]
    checks.append(Clamd(settings.clamd))
    checks.append(Spamd(settings.spamd, config.controls.me))
    return checks


_EARLY = frozenset({Stage.CONNECT, Stage.MAIL})


def _spf_result(mailauth: MailAuth) -> Callable[[str, str, str], Awaitable[str]]:
    verifier = mailauth.verifier

    async def ask(ip: str, sender: str, helo: str) -> str:
        return (await verifier.spf_mailfrom(ip, sender, helo)).result

    return ask


def _passlist(control: Path) -> PassList:
    """control/greylistpass; a file that cannot be used is logged (naming the bad line)
    and greylisting runs without it."""
    try:
        return PassList.load(control)
    except (OSError, ValueError) as exc:
        log.error("greylist control/greylistpass not used: %s", exc)
        return PassList()
