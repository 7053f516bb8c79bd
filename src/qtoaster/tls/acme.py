"""Certificates from an ACME CA (RFC 8555) for ``qtoaster cert acme`` (docs/tls.md "ACME").

Three parts: whether a new certificate is needed (:func:`decide`, pure: a third of the
lifetime left, as Let's Encrypt advises), the account key and the record of what was
obtained (``HOME/acme/``), and the order itself (:func:`obtain`, with the ``acme``
library), which hands each HTTP-01 token to a *publish* callback (the responder,
``net/challenge.py``, which runs as another user) and returns the chain and its new key.

Invariants: the account key and the certificate's private key exist only in this
process and in files of mode 0600 under ``HOME/acme/`` (the account key) or written by
the caller (``servercert.pem``); every failure (CA unreachable, a challenge the CA could
not validate, a rate limit, a time-out) is one :class:`AcmeError` with a readable
message, raised before anything is written.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import requests
from acme import challenges, client, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from josepy.errors import Error as JoseError
from josepy.jwa import RS256
from josepy.jwk import JWKRSA

from qtoaster.core.errors import QtoasterError
from qtoaster.core.home import Home
from qtoaster.tls import certs

LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
LETS_ENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"
USER_AGENT = "qtoaster"
RENEW_FRACTION = 3  # renew when less than 1/3 of the lifetime is left
ORDER_TIMEOUT = dt.timedelta(seconds=90)

Publish = Callable[[str, str], None]  # (token, key authorization) before the CA looks


class AcmeError(QtoasterError):
    """The certificate could not be obtained; ``str()`` says why, for the operator."""


def acme_dir(home: Home) -> Path:
    """``HOME/acme``: root's alone (0700), the account key and the record in it."""
    return home.root / "acme"


def account_key_path(home: Home) -> Path:
    return acme_dir(home) / "account.key"


def record_path(home: Home) -> Path:
    return acme_dir(home) / "certificate.json"


@dataclass(frozen=True, slots=True)
class Record:
    """What ``cert acme`` installed last: the CA's directory, the names, the leaf's
    SHA-256 fingerprint (hex), so a certificate installed since by other means is not
    taken for an ACME one."""

    directory: str
    names: tuple[str, ...]
    sha256: str


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def load_record(path: Path) -> Record | None:
    """The record, or None when missing or unreadable (then the next run renews)."""
    try:
        data = json.loads(path.read_text())
        return Record(str(data["directory"]), tuple(data["names"]), str(data["sha256"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_record(path: Path, record: Record) -> None:
    data = {"directory": record.directory, "names": list(record.names), "sha256": record.sha256}
    certs.write_private(path, (json.dumps(data, indent=1) + "\n").encode())


@dataclass(frozen=True, slots=True)
class Decision:
    renew: bool
    reason: str


def renewal_time(cert: x509.Certificate) -> dt.datetime:
    """When a third of the certificate's lifetime is left."""
    before, after = cert.not_valid_before_utc, cert.not_valid_after_utc
    return after - (after - before) / RENEW_FRACTION


def decide(
    cert: x509.Certificate | None,
    record: Record | None,
    directory: str,
    names: list[str],
    now: dt.datetime,
) -> Decision:
    """Whether to order a certificate: yes unless the installed one is the one we obtained
    last, from the same CA, for the same names, with more than a third of its life left."""
    if cert is None:
        return Decision(True, "no certificate is installed")
    if record is None or record.sha256 != fingerprint(cert):
        return Decision(True, "the installed certificate was not obtained by cert acme")
    if record.directory != directory:
        return Decision(True, f"the installed certificate is from {record.directory}")
    wanted = sorted({n.lower() for n in names})
    if sorted({n.lower() for n in record.names}) != wanted:
        return Decision(True, f"the installed certificate is for {', '.join(record.names)}")
    due = renewal_time(cert)
    after = cert.not_valid_after_utc
    if now >= due:
        return Decision(True, f"it expires on {after:%Y-%m-%d %H:%M} UTC: a third or less left")
    return Decision(
        False,
        f"valid until {after:%Y-%m-%d %H:%M} UTC; renewal from {due:%Y-%m-%d %H:%M} UTC",
    )


def installed_leaf(servercert: Path) -> x509.Certificate | None:
    """The first certificate of servercert.pem (its key is not parsed), or None."""
    try:
        chain = x509.load_pem_x509_certificates(servercert.read_bytes())
    except (OSError, ValueError):
        return None
    return chain[0] if chain else None


def account_key(path: Path) -> bytes:
    """The account key's PEM, made (RSA 2048, mode 0600, its directory 0700) if missing."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    pem = certs.new_key("rsa")
    certs.write_private(path, pem)
    return pem


@dataclass(frozen=True, slots=True)
class Order:
    directory: str
    names: list[str]
    email: str | None = None
    ca_bundle: Path | None = None  # trust this CA file for the ACME server's HTTPS


def obtain(order: Order, account_pem: bytes, publish: Publish) -> tuple[bytes, bytes]:
    """(certificate chain PEM, its new private key PEM) for *order*; AcmeError on failure."""
    try:
        return _obtain(order, account_pem, publish)
    except requests.exceptions.RequestException as exc:
        raise AcmeError(f"cannot reach the ACME server {order.directory}: {_reason(exc)}")
    except messages.Error as exc:
        raise AcmeError(_refusal(exc))
    except errors.ValidationError as exc:
        raise AcmeError(_failed_challenges(exc))
    except errors.TimeoutError:
        raise AcmeError(f"the CA did not finish the order within {ORDER_TIMEOUT.seconds} s")
    except (errors.Error, JoseError, ValueError) as exc:
        raise AcmeError(f"ACME: {exc or type(exc).__name__}")


def _obtain(order: Order, account_pem: bytes, publish: Publish) -> tuple[bytes, bytes]:
    key = serialization.load_pem_private_key(account_pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise AcmeError("the ACME account key must be an RSA key")
    jwk = JWKRSA(key=key)
    # requests' "verify" takes a CA bundle's path as well as a bool.
    verify = cast(bool, str(order.ca_bundle)) if order.ca_bundle else True
    net = client.ClientNetwork(jwk, alg=RS256, verify_ssl=verify, user_agent=USER_AGENT)
    acme = client.ClientV2(client.ClientV2.get_directory(order.directory, net), net)
    _account(acme, order.email)
    cert_key = certs.new_key("rsa")
    csr = certs.csr(cert_key, order.names[0], order.names[1:])
    orderr = acme.new_order(csr)
    for authz in orderr.authorizations:
        if authz.body.status == messages.STATUS_VALID:
            continue  # the CA remembers a recent validation
        challb = _http01(authz)
        response, validation = challb.chall.response_and_validation(jwk)
        publish(challb.chall.encode("token"), validation)
        acme.answer_challenge(challb, response)
    deadline = dt.datetime.now() + ORDER_TIMEOUT  # the library compares naive local times
    done = acme.poll_and_finalize(orderr, deadline)
    if not done.fullchain_pem:
        raise AcmeError("the CA finalized the order without a certificate")
    return done.fullchain_pem.encode(), cert_key


def _account(acme: client.ClientV2, email: str | None) -> None:
    """Register the account key, or find its existing account (RFC 8555 7.3.1)."""
    registration = messages.NewRegistration.from_data(email=email, terms_of_service_agreed=True)
    try:
        acme.new_account(registration)
    except errors.ConflictError as exc:
        existing = messages.RegistrationResource(uri=exc.location, body=messages.Registration())
        acme.query_registration(existing)


def _http01(authz: messages.AuthorizationResource) -> messages.ChallengeBody:
    for challb in authz.body.challenges:
        if isinstance(challb.chall, challenges.HTTP01):
            return challb
    name = authz.body.identifier.value
    raise AcmeError(f"the CA offers no http-01 challenge for {name}")


def _reason(exc: BaseException) -> str:
    """The innermost cause (connection refused, certificate verify failed...): requests
    nests urllib3's errors several deep, each message repeating the next."""
    seen = {id(exc)}
    while (inner := exc.__cause__ or exc.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        exc = inner
    return str(exc) or type(exc).__name__


def _refusal(error: messages.Error) -> str:
    detail = error.detail or error.description or ""
    if error.code == "rateLimited":
        return f"the CA refused: rate limit reached: {detail} (try again later)"
    return f"the CA refused: {error.code or error.typ}: {detail}"


def _failed_challenges(exc: errors.ValidationError) -> str:
    lines: list[str] = []
    for authzr in exc.failed_authzrs:
        name = authzr.body.identifier.value
        found: list[Any] = [c.error for c in authzr.body.challenges if c.error is not None]
        why = "; ".join(str(e.detail or e.typ) for e in found) or str(authzr.body.status)
        lines.append(f"{name}: {why}")
    return "challenge failed: " + "; ".join(lines)
