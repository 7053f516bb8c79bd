"""Certificates and keys for control/servercert.pem: make, request, inspect, install.

Invariants: every private key we write is unencrypted PEM (PKCS#8), because qmail's
servercert.pem and our server read it unattended; files holding a key are written
atomically (temporary file, fsync, rename) with mode 0600 from the start.

Self-signed certificates use RSA 2048, not EC P-256: SMTP TLS is opportunistic and
its clients include old MTAs and appliances that only do RSA key exchange or signatures;
RSA 2048 is what every one of them accepts (and what qmail's own "make cert" made).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from qtoaster.core.durable import fsync_dir

KEY_KINDS = ("rsa", "ec")
_PEM_CERT = b"-----BEGIN CERTIFICATE-----"
_PEM_KEY = re.compile(rb"-----BEGIN ([A-Z ]*PRIVATE KEY)-----.*?-----END \1-----", re.DOTALL)


def _generate(kind: str) -> CertificateIssuerPrivateKeyTypes:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"key kind {kind!r}: not one of {', '.join(KEY_KINDS)}")


def _key_pem(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def new_key(kind: str = "rsa") -> bytes:
    """A new private key as PEM: ``rsa`` (2048 bits) or ``ec`` (P-256)."""
    return _key_pem(_generate(kind))


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):  # keep order, drop repeats
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def self_signed(hostname: str, *, days: int = 3650, not_before: dt.datetime | None = None) -> bytes:
    """PEM private key (RSA 2048) then a self-signed certificate for *hostname*.

    Subject CN and subjectAltName are *hostname*; valid from an hour before *not_before*
    (default now, the hour absorbs clients' clock skew) for *days* days.
    """
    key = _generate("rsa")
    start = (not_before or dt.datetime.now(dt.UTC)) - dt.timedelta(hours=1)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days, hours=1))
        .add_extension(_san([hostname]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _key_pem(key) + cert.public_bytes(serialization.Encoding.PEM)


def csr(key_pem: bytes, hostname: str, extra_names: list[str]) -> bytes:
    """A PEM certificate request for *hostname* (+ *extra_names* as subjectAltNames)."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError("only RSA and EC keys can sign a request here")
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
        .add_extension(_san([hostname, *extra_names]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class Bundle:
    """A PEM file split up: its certificates in order (leaf first) and its private key."""

    certs: list[x509.Certificate]
    key: PrivateKeyTypes | None


def load_bundle(pem: bytes) -> Bundle:
    """Parse every certificate and the first private key of *pem*; ValueError if broken."""
    certs = x509.load_pem_x509_certificates(pem) if _PEM_CERT in pem else []
    match = _PEM_KEY.search(pem)
    try:
        key = serialization.load_pem_private_key(match.group(0), None) if match else None
    except TypeError as exc:  # encrypted: servercert.pem must be readable unattended
        raise ValueError(f"private key: {exc}") from exc
    return Bundle(certs, key)


def _spki(owner: PrivateKeyTypes | x509.Certificate) -> bytes:
    """DER SubjectPublicKeyInfo: equal for a certificate and its private key."""
    return owner.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def combine(cert_pem: bytes, key_pem: bytes) -> bytes:
    """servercert.pem contents: key then certificate chain; ValueError unless they match."""
    chain = load_bundle(cert_pem).certs
    key = load_bundle(key_pem).key
    if not chain:
        raise ValueError("no certificate found")
    if key is None:
        raise ValueError("no private key found")
    if _spki(chain[0]) != _spki(key):
        raise ValueError("the private key does not match the certificate")
    return _key_pem(key) + b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)


def dns_names(cert: x509.Certificate) -> list[str]:
    """subjectAltName DNS names and IP addresses; the CN only when there is no SAN."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return [str(cn[0].value)] if cn else []
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return [*san.get_values_for_type(x509.DNSName), *ips]


def name_matches(cert: x509.Certificate, hostname: str) -> bool:
    """RFC 6125 6.4: exact (case-insensitive) or a ``*.`` wildcard for one left label."""
    host = hostname.lower().rstrip(".")
    for name in (n.lower() for n in dns_names(cert)):
        if name == host:
            return True
        if name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:]:
            return True
    return False


def _key_type(key: object) -> str:
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return f"RSA {key.key_size} bits"
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return f"EC {key.curve.name}"
    return type(key).__name__


def summary(pem: bytes) -> list[str]:
    """Human lines about the first certificate of *pem* (and its chain and key)."""
    bundle = load_bundle(pem)
    if not bundle.certs:
        return ["no certificate"]
    cert = bundle.certs[0]
    lines = [
        f"subject: {cert.subject.rfc4514_string()}",
        f"issuer: {cert.issuer.rfc4514_string()}",
        f"names: {', '.join(dns_names(cert)) or '(none)'}",
        f"not before: {cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC",
        f"not after: {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC",
        f"key: {_key_type(cert.public_key())}",
        f"sha256 fingerprint: {cert.fingerprint(hashes.SHA256()).hex(':').upper()}",
    ]
    if len(bundle.certs) > 1:
        lines.append(f"chain: {len(bundle.certs) - 1} more certificate(s)")
    if bundle.key is not None:
        matches = "matches" if _spki(bundle.key) == _spki(cert) else "DOES NOT MATCH"
        lines.append(f"private key: {_key_type(bundle.key)}, {matches} the certificate")
    return lines


def warnings(cert: x509.Certificate, hostname: str | None, now: dt.datetime) -> list[str]:
    """Expired, expiring within 30 days, not yet valid, or not naming *hostname*."""
    found = []
    if now >= cert.not_valid_after_utc:
        found.append(f"expired on {cert.not_valid_after_utc:%Y-%m-%d}")
    elif cert.not_valid_after_utc - now < dt.timedelta(days=30):
        days = (cert.not_valid_after_utc - now).days
        found.append(f"expires in {days} days, on {cert.not_valid_after_utc:%Y-%m-%d}")
    if now < cert.not_valid_before_utc:
        found.append(f"not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    if hostname and not name_matches(cert, hostname):
        found.append(f"does not name {hostname} (control/me)")
    return found


def write_private(path: Path, data: bytes, *, keep_old: bool = False) -> None:
    """Write *data* to *path* atomically with mode 0600; *keep_old* keeps the previous
    file as ``<path>.old`` (replacing an older one).

    A file that replaces one takes over its owner, group and mode (at most 0640) before
    the rename: a role that reads it (servercert.pem is root:qtoaster-tls 0640) never
    finds the new file unreadable between the rename and ``give_owners``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o600)  # O_CREAT on an existing tmp keeps its mode
        _take_over_owner(path, tmp)
        if keep_old and path.exists():
            # A second name for the old file, so *path* itself never goes missing.
            old_tmp = path.with_name(f".{path.name}.old-{os.getpid()}")
            old_tmp.unlink(missing_ok=True)
            os.link(path, old_tmp)
            os.replace(old_tmp, path.with_name(path.name + ".old"))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def _take_over_owner(path: Path, tmp: Path) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return  # a first install: 0600, give_owners does the rest
    try:
        os.chown(tmp, st.st_uid, st.st_gid)
    except PermissionError:
        return  # not root and not the group's member: stays 0600, the caller's own
    os.chmod(tmp, stat.S_IMODE(st.st_mode) & 0o640)


EXPIRY_WARNING = dt.timedelta(days=14)


def check_servercert(path: Path, now: dt.datetime) -> tuple[list[str], list[str]]:
    """(problems, warnings) of the server certificate file *path*, each line naming it.

    A problem means TLS cannot be offered honestly: the file is missing, unreadable, not
    PEM, holds no certificate or no private key, a key that does not match, or a
    certificate that expired or is not valid yet.  A warning: it expires within 14 days.
    """
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        return [f"{path}: missing (make one: qtoaster cert self-signed, or cert install)"], []
    except OSError as exc:
        return [f"{path}: cannot read it: {exc.strerror or exc}"], []
    if _PEM_CERT not in pem and _PEM_KEY.search(pem) is None:
        return [f"{path}: not PEM: no certificate and no private key in it"], []
    try:
        bundle = load_bundle(pem)
    except ValueError as exc:
        return [f"{path}: not valid PEM: {exc}"], []
    if not bundle.certs:
        return [f"{path}: no certificate in it"], []
    if bundle.key is None:
        return [f"{path}: no private key in it"], []
    cert = bundle.certs[0]
    problems: list[str] = []
    if _spki(bundle.key) != _spki(cert):
        problems.append(f"{path}: the private key does not match the certificate")
    after, before = cert.not_valid_after_utc, cert.not_valid_before_utc
    if now >= after:
        problems.append(f"{path}: certificate expired on {after:%Y-%m-%d %H:%M} UTC")
    elif now < before:
        problems.append(f"{path}: certificate not valid before {before:%Y-%m-%d %H:%M} UTC")
    elif after - now < EXPIRY_WARNING:
        days = (after - now).days
        return problems, [f"{path}: certificate expires in {days} days, on {after:%Y-%m-%d}"]
    return problems, []
