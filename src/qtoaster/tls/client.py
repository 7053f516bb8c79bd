"""Client-side TLS for remote delivery: which hosts get TLS, with what context (spec 17.5).

Follows qmail-tls ``tls_init`` in qmail-remote.c (Frederik Vermeulen's patch), per host
contacted (the MX or smtproutes relay name, lower-cased):

1. ``control/tlshosts/<host>.pem`` exists: TLS is MANDATORY.  The server certificate must
   verify against the CAs in that file and name the host (`check_name`).  qmail looks at
   this file first, so it wins over ``notlshosts/<host>``.
2. ``control/notlshosts/<host>`` exists: no TLS at all.
3. ``control/tlshosts/exhaustivelist`` exists: no TLS unless step 1 applied.  qmail only
   tests that the file exists (it is usually empty); we also treat host names listed in
   it as opportunistic-TLS hosts, so a list written in the belief that it is a list works.
4. Otherwise opportunistic: any certificate, no name check (RFC 7435: encryption without
   authentication beats clear text).

Invariants: ``tlsclientciphers`` is read once, by the constructor (or handed to it, loaded
by config.rolecontrols.load_tls_client_ciphers), and so is
``clientcert.pem`` (certificate chain + key, optional) for the opportunistic context; a
present but unusable file is a `ConfigError` there (qmail ignored a bad clientcert.pem;
we would rather hear about it).  A tlshosts context loads clientcert.pem again when it is
(re)built: ssl can only load a key from a file, and we keep no key copy in /tmp.

Every context has TLS 1.2 as its minimum (RFC 8996), does no hostname check of its own
(qmail's matching rules are not OpenSSL's, see `check_name`) and uses ``tlsclientciphers``
(lines joined with ``:``), else OpenSSL's ``DEFAULT`` as qmail did: a wider list than
Python's, so old peers still get encryption.  The cipher list governs TLS <= 1.2 only;
OpenSSL configures TLS 1.3 suites separately.

Contexts for tlshosts files (and the exhaustivelist) are cached per file and rebuilt when
its mtime, size or inode changes, so a policy lookup costs a few ``stat`` calls.
"""

from __future__ import annotations

import enum
import errno
import os
import re
import ssl
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qtoaster.config.control import ascii_lower, read_list
from qtoaster.config.rolecontrols import load_tls_client_ciphers
from qtoaster.core.errors import ConfigError
from qtoaster.tls.certs import load_bundle

DEFAULT_CIPHERS = "DEFAULT"  # qmail-remote: ciphers = "DEFAULT" without tlsclientciphers

_SSL_DECORATION = re.compile(r"^\[[^\]]*\] *| *\(_ssl\.c:\d+\)$")
_FileStamp = tuple[int, int, int]  # st_mtime_ns, st_size, st_ino


class ClientTlsMode(enum.Enum):
    NONE = "none"
    OPPORTUNISTIC = "opportunistic"
    REQUIRED = "required"


@dataclass(frozen=True, slots=True)
class ClientTlsPolicy:
    mode: ClientTlsMode
    context: ssl.SSLContext | None  # None for NONE
    file: str  # the tlshosts file path (for texts), "" otherwise
    server_hostname: str | None  # SNI and the name checked for REQUIRED; None otherwise
    # A check of the peer's certificates (DER, leaf first) after the handshake: None when
    # they are acceptable, else the problem (DANE's TLSA match, remote/dane.py).
    check: Callable[[list[bytes]], str | None] | None = None
    # What imposed REQUIRED, for log lines (``DANE TLSA of mx.example``); "" for tlshosts.
    label: str = ""


_NO_TLS = ClientTlsPolicy(ClientTlsMode.NONE, None, "", None)


def _no_password() -> str:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key.
    return ""


class ClientTls:
    """The TLS client settings of one control directory; `policy_for` per host contacted."""

    def __init__(self, control_dir: Path, ciphers: str | None = None) -> None:
        """*ciphers*: tlsclientciphers as loaded (lines joined with ":", "" for none);
        None reads it from *control_dir* now."""
        self._control = control_dir
        self._clientcert = control_dir / "clientcert.pem"
        problems: list[str] = []
        self._ciphers = self._check_ciphers(ciphers, problems)
        self._has_clientcert = self._probe_clientcert(problems)
        if problems:
            raise ConfigError(problems)
        # One opportunistic context for every host: it has no per-host state.
        self._opportunistic = self._new_context()
        self._opportunistic.verify_mode = ssl.CERT_NONE
        self._required: dict[str, tuple[_FileStamp, ssl.SSLContext]] = {}
        self._exhaustive: tuple[_FileStamp, frozenset[str]] | None = None

    def _check_ciphers(self, loaded: str | None, problems: list[str]) -> str:
        path = self._control / "tlsclientciphers"
        if loaded is None:
            try:
                # qmail: control_readfile, then every '\0' but the last becomes ':'.
                loaded = load_tls_client_ciphers(self._control)
            except OSError as exc:
                problems.append(f"{path}: unable to read: {exc.strerror}")
                return DEFAULT_CIPHERS
        ciphers = loaded or DEFAULT_CIPHERS
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).set_ciphers(ciphers)
        except ssl.SSLError:
            problems.append(f"{path}: the cipher list {ciphers!r} selects no cipher")
            return DEFAULT_CIPHERS
        return ciphers

    def _probe_clientcert(self, problems: list[str]) -> bool:
        """True when clientcert.pem exists and loads (certificate chain and its key)."""
        try:
            if not stat.S_ISREG(self._clientcert.stat().st_mode):
                problems.append(f"{self._clientcert}: not a regular file")
                return False
        except FileNotFoundError:
            return False
        except OSError as exc:
            problems.append(f"{self._clientcert}: unable to read: {exc.strerror}")
            return False
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(
                self._clientcert, password=_no_password
            )
        except (OSError, ssl.SSLError) as exc:
            problems.append(f"{self._clientcert}: {_clientcert_problem(self._clientcert, exc)}")
            return False
        return True

    def _new_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.check_hostname = False  # check_name does qmail's matching after the handshake
        ctx.set_ciphers(self._ciphers)
        if self._has_clientcert:
            # qmail: "let the other side complain if it needs a cert and we don't have one".
            # The file loaded in the constructor; if it has been broken since, say so.
            try:
                ctx.load_cert_chain(self._clientcert, password=_no_password)
            except (OSError, ssl.SSLError) as exc:
                problem = _clientcert_problem(self._clientcert, exc)
                raise ConfigError([f"{self._clientcert}: {problem}"]) from exc
        return ctx

    def unverified(
        self, host: str, label: str, check: Callable[[list[bytes]], str | None]
    ) -> ClientTlsPolicy:
        """Mandatory TLS whose certificate is judged by *check* alone (DANE)."""
        return ClientTlsPolicy(
            ClientTlsMode.REQUIRED, self._opportunistic, label, None, check, label
        )

    def verified(self, host: str, label: str, cafile: str | None) -> ClientTlsPolicy:
        """Mandatory TLS, the chain verified against the system CAs (and *cafile*) and
        naming *host* (MTA-STS, RFC 8461 4.2).  *label* names the policy in texts."""
        key = f"pkix:{cafile or ''}"
        cached = self._required.get(key)
        if cached is None:
            ctx = self._new_context()
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
            if cafile:
                try:
                    ctx.load_verify_locations(cafile=cafile)
                except (OSError, ssl.SSLError) as exc:
                    raise ConfigError([f"TLS unable to load {cafile}: {_error_text(exc)}"]) from exc
            ctx.verify_mode = ssl.CERT_REQUIRED
            cached = ((0, 0, 0), ctx)
            self._required[key] = cached
        return ClientTlsPolicy(ClientTlsMode.REQUIRED, cached[1], label, host, None, label)

    def policy_for(self, host: str) -> ClientTlsPolicy:
        """The TLS policy for *host* (lower-cased MX or relay name), in qmail's order.

        Raises ConfigError (the text is qmail's ``TLS unable to load <file>: <error>``)
        when ``tlshosts/<host>.pem`` exists but cannot be used: the caller must defer the
        delivery, as qmail did (``Z``), never send in clear.
        """
        if not _usable_as_file_name(host):
            # A DNS label may hold "/" or start with ".": never let it walk the tree.
            return self._without_tlshosts_file(host)
        pem = self._control / "tlshosts" / f"{host}.pem"
        stamp = _stamp(pem)
        if stamp is not None:
            return ClientTlsPolicy(
                ClientTlsMode.REQUIRED, self._verifying(pem, stamp), str(pem), host
            )
        if _exists(self._control / "notlshosts" / host):
            return _NO_TLS
        return self._without_tlshosts_file(host)

    def _without_tlshosts_file(self, host: str) -> ClientTlsPolicy:
        listed = self._exhaustive_list()
        if listed is not None and host not in listed:
            return _NO_TLS
        return ClientTlsPolicy(ClientTlsMode.OPPORTUNISTIC, self._opportunistic, "", None)

    def _exhaustive_list(self) -> frozenset[str] | None:
        """Hosts listed in tlshosts/exhaustivelist; None when it does not exist."""
        path = self._control / "tlshosts" / "exhaustivelist"
        try:
            st = path.stat()
        except OSError:
            return None  # qmail: stat() != 0, the file is not there
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if self._exhaustive is None or self._exhaustive[0] != stamp:
            self._exhaustive = (stamp, _listed(path))
        return self._exhaustive[1]

    def _verifying(self, pem: Path, stamp: _FileStamp) -> ssl.SSLContext:
        key = str(pem)
        cached = self._required.get(key)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        ctx = self._new_context()
        try:
            ctx.load_verify_locations(cafile=key)
        except (OSError, ssl.SSLError) as exc:
            self._required.pop(key, None)
            raise ConfigError([f"TLS unable to load {pem}: {_error_text(exc)}"]) from exc
        ctx.verify_mode = ssl.CERT_REQUIRED
        self._required[key] = (stamp, ctx)
        return ctx


def _usable_as_file_name(host: str) -> bool:
    return bool(host) and "/" not in host and "\0" not in host and not host.startswith(".")


def _stamp(path: Path) -> _FileStamp | None:
    """Identity of *path*'s contents for the cache; None when it does not exist.

    qmail treats any stat(2) error as "no such file", i.e. no mandatory TLS; we do so for
    ENOENT, ENOTDIR and ENAMETOOLONG (a 253-octet name + ".pem" cannot be a file name)
    only.  Any other error fails closed: the file counts as present
    and loading it raises, so the delivery is deferred rather than sent in clear.
    """
    try:
        st = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            return None
        return (-1, -1, -1)  # exists but unreadable: loading it reports the error
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _exists(path: Path) -> bool:
    """qmail's ``stat(...) == 0``: any error counts as absent (for these files that only
    ever means more TLS, never less)."""
    try:
        os.stat(path)
    except OSError:
        return False
    return True


def _listed(path: Path) -> frozenset[str]:
    try:
        return frozenset(ascii_lower(line.strip()) for line in read_list(path))
    except OSError:
        return frozenset()  # an unreadable list lists nobody: qmail never read it


def _error_text(exc: OSError) -> str:
    """OpenSSL's own words: ``[X509: NO_CERT...] no certificate or crl found (_ssl.c:1)``
    becomes ``no certificate or crl found``, as qmail printed ERR_error_string's text."""
    text = exc.strerror or str(exc)
    return _SSL_DECORATION.sub("", text) if isinstance(exc, ssl.SSLError) else text


def _clientcert_problem(path: Path, exc: OSError) -> str:
    """Why clientcert.pem does not load, in words (OpenSSL says only "PEM lib")."""
    try:
        bundle = load_bundle(path.read_bytes())
    except (OSError, ValueError) as broken:
        return f"unable to load the client certificate: {broken}"
    if not bundle.certs:
        return "no certificate found (want the certificate chain and its private key)"
    if bundle.key is None:
        return "no private key found (want the certificate chain and its private key)"
    return f"unable to load the client certificate: {_error_text(exc)}"


def _outsafe(text: str) -> str:
    """qmail-remote's outsafe: every byte outside 33..126 printed as ``?``."""
    return "".join(chr(b) if 33 <= b <= 126 else "?" for b in text.encode("utf-8", "replace"))


def _matches(name: str, host: str) -> bool:
    """qmail-remote's match_partner: exact (ASCII case-insensitive) or ``*.`` + the host
    without its first label (one level only: ``*.example.com`` is not ``a.b.example.com``)."""
    name, host = ascii_lower(name), ascii_lower(host)
    if name == host:
        return True
    # qmail also let a bare "*" match any dot-less host; we require "*." (RFC 6125 6.4.3).
    return name.startswith("*.") and "." in host and host[host.index(".") :] == name[1:]


def _first_common_name(cert: dict[str, Any]) -> str:
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName" and isinstance(value, str):
                return value
    return ""


def check_name(cert: dict[str, Any], host: str) -> str | None:
    """None when *cert* (``getpeercert()``) names *host*; else qmail's problem text.

    RFC 2595 2.4 as qmail-tls reads it: any subjectAltName dNSName first; when none
    matches (or there is none), the first commonName.
    """
    if not cert:
        return f"TLS unable to verify server {host}: no certificate provided"
    for kind, value in cert.get("subjectAltName", ()):
        if kind == "DNS" and _matches(value, host):
            return None
    cn = _first_common_name(cert)
    if not cn:
        return f"TLS unable to verify server {host}: certificate contains no valid commonName"
    if _matches(cn, host):
        return None
    return f"TLS unable to verify server {host}: received certificate for {_outsafe(cn)}"


def verify_failure_text(file: str, error: ssl.SSLCertVerificationError) -> str:
    """qmail's text when the chain does not verify against the tlshosts *file*."""
    reason = error.verify_message or error.reason or str(error)
    return f"TLS unable to verify server with {file}: {reason}"


def describe(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> str:
    """``TLSv1.3 TLS_AES_256_GCM_SHA384``: protocol version and cipher, for logs and reports."""
    cipher = ssl_object.cipher()
    name = cipher[0] if cipher else "unknown"
    version = ssl_object.version() or (cipher[1] if cipher else "TLS")
    return f"{version} {name}"
