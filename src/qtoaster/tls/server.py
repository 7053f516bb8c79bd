"""Server-side TLS: an ``ssl.SSLContext`` from qmail's control files (spec 7.1, 7.3).

Follows qmail-tls ``tls_init``/``tls_verify`` (qmail-smtpd with the qmail-tls patch):

- ``servercert.pem`` holds the certificate, its chain and the private key in one PEM
  file.  Absent or unusable: `TlsError` with qmail's reason (``missing certificate``,
  ``no valid RSA private key``) so the caller can answer ``454 TLS <reason> (#4.3.0)``.
- ``tlsserverciphers`` (lines joined with ``:``) or env ``TLSCIPHERS`` choose the TLS <= 1.2
  ciphers; TLS 1.3 suites are never touched (OpenSSL configures them separately).
  Unset: Python's default list, not OpenSSL's ``DEFAULT`` that qmail used (that one
  still allows CBC-SHA1 suites).  A list that selects nothing is a `TlsError`
  (qmail silently ignored it; we would rather not run with ciphers the operator refused).
- TLS 1.2 is the minimum (RFC 8996 deprecates 1.0 and 1.1; SSLv2/3 are gone anyway).
- ``clientca.pem`` + a non-empty ``tlsclients``: the handshake asks for a client
  certificate (CERT_OPTIONAL: asked, never required).  qmail instead renegotiated when a
  relay was refused; TLS 1.3 has no renegotiation, so we ask up front.  Python's ssl has
  no verify callback, so unlike qmail (whose callback accepted everything and read the
  result afterwards) a client that presents a certificate our CAs cannot verify fails
  the handshake: hence we ask only when relaying by certificate is configured at all.
- ``clientcrl.pem``: CRLs, checked for every certificate of the chain
  (VERIFY_CRL_CHECK_CHAIN, qmail's CRL_CHECK|CRL_CHECK_ALL).  An unreadable clientca.pem
  or clientcrl.pem disables the certificate request (relay by certificate fails closed)
  and is reported through *warn*; it never stops TLS itself.
- ``dh1024.pem``: handed to ``load_dh_params`` when present (only DHE suites of TLS <= 1.2
  use it; ECDHE and TLS 1.3 do not).  OpenSSL 3 refuses 1024-bit groups at security
  level 2: that is reported and ignored.  ``dh512.pem`` and ``rsa512.pem`` (export-grade
  key exchange, removed from OpenSSL) are ignored.  None of the three ever raises.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from qtoaster.config.control import ascii_lower, read_list
from qtoaster.config.rolecontrols import TlsServerControls, load_tls_server
from qtoaster.config.settings import TlsVersion
from qtoaster.core.errors import QtoasterError

log = logging.getLogger(__name__)

# Keyed by the settings' enum; its members hash and compare as "TLSv1.2"/"TLSv1.3".
TLS_VERSIONS: dict[str, ssl.TLSVersion] = {
    TlsVersion.TLSV1_2: ssl.TLSVersion.TLSv1_2,
    TlsVersion.TLSV1_3: ssl.TLSVersion.TLSv1_3,
}

Warn = Callable[[str], None]
TlsObject = ssl.SSLObject | ssl.SSLSocket


class TlsError(QtoasterError):
    """TLS cannot be offered; ``str()`` is qmail's ``<reason>[: <openssl error>]``."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class TlsSettings:
    """What a server context is built from; `from_controls` fills it from the typed
    control files (config.rolecontrols), `read_settings` from a control directory."""

    certfile: Path
    min_version: str = TlsVersion.TLSV1_2
    ciphers: str | None = None  # TLS <= 1.2 cipher string; None: Python's default
    clientca: Path | None = None  # set only when it exists
    clientcrl: Path | None = None
    dhparams: Path | None = None
    tlsclients: frozenset[str] = frozenset()  # ASCII-lower-cased (qmail's constmap)

    def __post_init__(self) -> None:
        if self.min_version not in TLS_VERSIONS:
            raise ValueError(
                f"TLS minimum version {self.min_version!r}: not one of {', '.join(TLS_VERSIONS)}"
            )

    @classmethod
    def from_controls(
        cls,
        controls: TlsServerControls,
        *,
        env_ciphers: str | None = None,
        min_version: str = TlsVersion.TLSV1_2,
    ) -> TlsSettings:
        """*env_ciphers* is env TLSCIPHERS: it overrides tlsserverciphers (empty: default)."""
        ciphers = controls.ciphers if env_ciphers is None else env_ciphers
        return cls(
            certfile=controls.certfile,
            min_version=min_version,
            ciphers=ciphers or None,
            clientca=controls.clientca,
            clientcrl=controls.clientcrl,
            dhparams=controls.dhparams,
            tlsclients=controls.tlsclients,
        )

    @property
    def asks_client_cert(self) -> bool:
        """qmail's tls_verify condition: tlsclients lists someone and clientca.pem exists."""
        return self.clientca is not None and bool(self.tlsclients)


def read_tls_controls(control: Path) -> TlsServerControls:
    """The TLS control files of *control*; TlsError if one cannot be read (qmail: die_control)."""
    try:
        return load_tls_server(control)
    except OSError as exc:
        raise TlsError("unable to read controls", exc.strerror) from exc


def read_settings(
    control: Path, *, env_ciphers: str | None = None, min_version: str = TlsVersion.TLSV1_2
) -> TlsSettings:
    """The TLS control files of *control*; TlsError if one cannot be read (qmail: die_control)."""
    return TlsSettings.from_controls(
        read_tls_controls(control), env_ciphers=env_ciphers, min_version=min_version
    )


def _no_password() -> str:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key.
    return ""


def _load_certificate(ctx: ssl.SSLContext, path: Path) -> None:
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        raise TlsError("missing certificate") from None
    except OSError as exc:
        raise TlsError("missing certificate", exc.strerror) from exc
    try:
        ctx.load_cert_chain(path, password=_no_password)
    except ssl.SSLError as exc:
        has_cert = b"-----BEGIN CERTIFICATE-----" in pem
        reason = "no valid RSA private key" if has_cert else "missing certificate"
        raise TlsError(reason, exc.reason or str(exc)) from exc


def _load_client_verification(ctx: ssl.SSLContext, settings: TlsSettings, warn: Warn) -> bool:
    """Load clientca.pem (and CRLs); False when they cannot be used."""
    assert settings.clientca is not None
    try:
        ctx.load_verify_locations(cafile=str(settings.clientca))
    except (OSError, ssl.SSLError) as exc:
        warn(f"{settings.clientca}: {exc}; not asking for client certificates")
        return False
    if settings.clientcrl is not None:
        try:
            # OpenSSL's file lookup loads the CRLs of a PEM file as well as certificates.
            ctx.load_verify_locations(cafile=str(settings.clientcrl))
        except (OSError, ssl.SSLError) as exc:
            warn(f"{settings.clientcrl}: {exc}; not asking for client certificates")
            return False
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_CHAIN
    return True


def _load_dh(ctx: ssl.SSLContext, path: Path | None, warn: Warn) -> None:
    if path is None:
        return
    try:
        ctx.load_dh_params(str(path))
    except (OSError, ssl.SSLError) as exc:
        warn(f"{path}: ignored ({exc}); ECDHE and TLS 1.3 do not need it")


def build_context(
    settings: TlsSettings, *, require_client_cert: bool = False, warn: Warn = log.warning
) -> ssl.SSLContext:
    """A server context for *settings*; TlsError when TLS cannot be offered at all."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = TLS_VERSIONS[settings.min_version]
    # We never renegotiate; refusing client-initiated renegotiation closes a DoS vector.
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    _load_certificate(ctx, settings.certfile)
    if settings.ciphers is not None:
        try:
            ctx.set_ciphers(settings.ciphers)
        except ssl.SSLError as exc:
            raise TlsError("unable to set cipher list", settings.ciphers) from exc
    _load_dh(ctx, settings.dhparams, warn)
    if require_client_cert:
        if settings.clientca is None or not _load_client_verification(ctx, settings, warn):
            raise TlsError("missing clientca.pem")
        ctx.verify_mode = ssl.CERT_REQUIRED
    elif settings.asks_client_cert and _load_client_verification(ctx, settings, warn):
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def server_context(
    control: Path | TlsServerControls,
    *,
    env_ciphers: str | None = None,
    require_client_cert: bool = False,
    min_version: str = TlsVersion.TLSV1_2,
    warn: Warn = log.warning,
) -> ssl.SSLContext:
    """The server context for *control* (spec 7.1): its files loaded by
    config.rolecontrols.load_tls_server, or a control directory to read them from.

    *env_ciphers* is env TLSCIPHERS (overrides tlsserverciphers; empty: the default).
    """
    controls = read_tls_controls(control) if isinstance(control, Path) else control
    settings = TlsSettings.from_controls(controls, env_ciphers=env_ciphers, min_version=min_version)
    return build_context(settings, require_client_cert=require_client_cert, warn=warn)


def reader_context(
    control: Path, *, min_version: str, log: logging.Logger
) -> tuple[ssl.SSLContext | None, str]:
    """pop3d's and imapd's server context (control/servercert.pem, no client certificates),
    or None and why not (logged on the role's ``log`` as ``no TLS: <why>``): their
    STLS/STARTTLS answers say why, and pop3s/imaps connections are dropped."""
    try:
        return server_context(control, min_version=min_version), "missing certificate"
    except TlsError as exc:
        log.warning("tls no TLS: %s", exc)
        return None, str(exc)


def tls_available(control: Path | TlsServerControls) -> bool:
    """True when servercert.pem is present and a context loads (advertise STARTTLS)."""
    try:
        server_context(control, warn=lambda message: None)
    except TlsError:
        return False
    return True


def client_cert_relay(ssl_object: TlsObject, clients: frozenset[str] | Path) -> tuple[bool, str]:
    """Spec 7.3: may this TLS client relay by its certificate?

    (True, email) when the verified peer certificate's subject emailAddress is listed in
    control/tlsclients (ASCII case-insensitive, like qmail's constmap); else (False,
    reason) where reason is qmail's text or ``""`` when qmail gives none (no tlsclients,
    no certificate presented), i.e. the bare ``no valid cert for gatewaying``.

    *clients* is the loaded list (`TlsServerControls.tlsclients`: no file is read), or a
    control directory whose tlsclients is read now (an unreadable file lists nobody).
    """
    if isinstance(clients, Path):
        try:
            clients = frozenset(ascii_lower(x) for x in read_list(clients / "tlsclients"))
        except OSError:
            return False, ""
    if not clients:
        return False, ""
    cert = ssl_object.getpeercert()
    if cert is None:
        return False, ""
    if not cert:
        # A certificate arrived but OpenSSL did not verify it (context without CERT_*).
        return False, "unable to get local issuer certificate"
    email = _subject_email(cert)
    if not email:
        return False, "contains no email address"
    if ascii_lower(email) not in clients:
        return False, "email address not in my list of tlsclients"
    return True, email


def _subject_email(cert: Mapping[str, object]) -> str:
    subject = cert.get("subject", ())
    assert isinstance(subject, tuple)
    for rdn in subject:
        for key, value in rdn:
            if key == "emailAddress" and isinstance(value, str):
                return value
    return ""


def nogateway_suffix(reason: str) -> str:
    """Text qmail appends to the rcpthosts refusal under TLS (tls_nogateway)."""
    return "; no valid cert for gatewaying" + (f": {reason}" if reason else "")


def describe(ssl_object: TlsObject, cert_email: str | None = None) -> str:
    """The Received protocol under TLS (spec 3.7, 7.2): ``(<version> <cipher> encrypted) SMTP``.

    qmail-tls wrote ``(<cipher> encrypted) SMTP``; the version is added because TLS 1.2
    cipher names do not tell it (issue 4: the header records version and cipher).

    <cipher> is OpenSSL's cipher name (SSL_get_cipher), e.g. ``TLS_AES_256_GCM_SHA384``;
    *cert_email* adds the ``\\n  (cert <email>)`` continuation of a relay by certificate.
    """
    cipher = ssl_object.cipher()
    name = cipher[0] if cipher else "unknown"
    version = ssl_object.version() or (cipher[1] if cipher else "TLS")
    text = f"({version} {name} encrypted) SMTP"
    if cert_email:
        text += f"\n  (cert {cert_email})"
    return text


def session_summary(ssl_object: TlsObject) -> str:
    """For log lines: ``TLSv1.3 TLS_AES_256_GCM_SHA384 256 bits``."""
    cipher = ssl_object.cipher()
    if not cipher:
        return "no TLS session"
    name, version, bits = cipher
    return f"{ssl_object.version() or version} {name} {bits} bits"
