"""The DKIM key store: ``HOME/dkim/``, outside the directory database (docs/dkim.md).

Layout::

    dkim/                       0700, the send role's user (supervisor/ownership.py)
      DOMAIN/                   0700, one per signing domain (lowercase)
        SELECTOR.pem            0600, the private key, PKCS#8 PEM, unencrypted
        keys.json               the state of every key of the domain

``keys.json`` maps each selector to ``{"algorithm", "state", "created", "since"}``
(``since``: when the key entered its state; a retiring key is deleted ``grace`` seconds
after it).  It is replaced atomically (a temporary file, fsync, rename, fsync of the
directory): a reader sees the old or the new state, never half of one.  A key file without
an entry is ignored (a keygen that stopped half-way); an entry without a key file is
reported as missing by :func:`load_keys`' callers through :func:`load_private`.

Selectors are named by date and algorithm: ``20261207r`` (RSA-2048), ``20261207e``
(Ed25519); a second key of the same day and algorithm gets ``20261207r2``, and so on.
States: ``pending`` (made, its TXT record not yet seen in DNS), ``active`` (signs),
``retiring`` (no longer signs; its record stays published so that mail in flight still
verifies).  Nothing here asks DNS: :func:`rotate` is given a lookup function.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from qtoaster.core.durable import fsync_dir
from qtoaster.core.errors import ConfigError, QtoasterError
from qtoaster.mailauth.dkimsign import ED25519_SHA256, RSA_SHA256, PrivateKey, Signer

DIRNAME = "dkim"
STATE_FILE = "keys.json"
RSA_BITS = 2048
ALGORITHMS = {"rsa": RSA_SHA256, "ed25519": ED25519_SHA256}
_SUFFIX = {RSA_SHA256: "r", ED25519_SHA256: "e"}
_K = {RSA_SHA256: "rsa", ED25519_SHA256: "ed25519"}
STATES = ("pending", "active", "retiring")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_SELECTOR = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})+")


class KeyStoreError(QtoasterError):
    """A key or its state cannot be read, written or found (the message says which)."""


@dataclass(frozen=True, slots=True)
class DkimKey:
    domain: str
    selector: str
    algorithm: str  # "rsa-sha256" | "ed25519-sha256"
    state: str  # "pending" | "active" | "retiring"
    created: float
    public: str = ""  # the p= value: base64 of the public key (RSA: SubjectPublicKeyInfo)
    since: float = 0.0  # when the key entered its state

    def record_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    def txt(self) -> str:
        return f"v=DKIM1; k={_K[self.algorithm]}; p={self.public}"


def dkim_dir(home_root: Path) -> Path:
    return home_root / DIRNAME


def check_domain(domain: str) -> str:
    """The domain, lowercased; ConfigError unless it is a plain DNS name (no path tricks)."""
    name = domain.strip().lower().rstrip(".")
    if len(name) > 253 or not _DOMAIN.fullmatch(name):
        raise ConfigError([f"{domain!r} is not a domain name"])
    return name


def check_selector(selector: str) -> str:
    name = selector.strip().lower()
    if len(name) > 63 or not _SELECTOR.fullmatch(name):
        raise ConfigError(
            [f"selector {selector!r}: letters, digits and hyphens (dot-separated labels) only"]
        )
    return name


def load_keys(dkim_dir: Path, domain: str) -> list[DkimKey]:
    """Every key of ``domain`` with its state, oldest first; [] if it has none."""
    domain = check_domain(domain)
    entries = _read_state(dkim_dir / domain)
    keys: list[DkimKey] = []
    for selector, entry in entries.items():
        public = ""
        try:
            public = _public_b64(_load_pem(dkim_dir / domain / f"{selector}.pem"))
        except KeyStoreError:
            pass  # listed without a usable key file: shown with an empty p=, never signs
        keys.append(
            DkimKey(
                domain,
                selector,
                entry["algorithm"],
                entry["state"],
                entry["created"],
                public,
                entry["since"],
            )
        )
    return sorted(keys, key=lambda k: (k.created, k.selector))


def domains(dkim_dir: Path) -> list[str]:
    """The domains that have a key directory."""
    try:
        names = sorted(p.name for p in dkim_dir.iterdir() if p.is_dir() and not p.is_symlink())
    except FileNotFoundError:
        return []
    return [n for n in names if _DOMAIN.fullmatch(n)]


def load_private(dkim_dir: Path, key: DkimKey) -> PrivateKey:
    return _load_pem(dkim_dir / key.domain / f"{key.selector}.pem")


def active_signers_of(dkim_dir: Path, domain: str) -> list[Signer]:
    """``domain``'s active keys, ready to sign (the send role: at start); KeyStoreError if
    one cannot be read."""
    return [
        Signer(key.domain, key.selector, key.algorithm, load_private(dkim_dir, key))
        for key in load_keys(dkim_dir, domain)
        if key.state == "active"
    ]


def generate(
    dkim_dir: Path,
    domain: str,
    algorithm: str,
    selector: str | None = None,
    now: float | None = None,
) -> DkimKey:
    """A new pending key (``algorithm``: "rsa" or "ed25519"); its file is written before
    its state entry, so a crash leaves at most an ignored key file."""
    domain = check_domain(domain)
    if algorithm not in ALGORITHMS:
        raise ConfigError([f"algorithm {algorithm!r}: rsa or ed25519"])
    alg = ALGORITHMS[algorithm]
    now = time.time() if now is None else now
    where = dkim_dir / domain
    _mkdir(dkim_dir)
    _mkdir(where)
    entries = _read_state(where)
    if selector is None:
        selector = _date_selector(now, alg, entries, where)
    else:
        selector = check_selector(selector)
        if selector in entries or (where / f"{selector}.pem").exists():
            raise ConfigError([f"{domain} already has a key with selector {selector}"])
    private: PrivateKey
    if alg == RSA_SHA256:
        private = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    else:
        private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = where / f"{selector}.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    entries[selector] = {"algorithm": alg, "state": "pending", "created": now, "since": now}
    _write_state(where, entries)
    return DkimKey(domain, selector, alg, "pending", now, _public_b64(private), now)


def keygen(
    dkim_dir: Path,
    domain: str,
    algorithms: Sequence[str],
    selector: str | None = None,
    *,
    active: bool = False,
) -> list[DkimKey]:
    """New keys of ``domain``, one per algorithm ("rsa", "ed25519"): pending, or
    ``active`` (signing from the send role's next start, without waiting for rotate to see
    the record in DNS).  ConfigError when ``selector`` would name more than one key or when
    ``active`` would put a key beside an active one of its algorithm (``qtoaster dkim
    keygen`` and the http role's ``POST /domains/DOMAIN/dkim`` share this)."""
    domain = check_domain(domain)
    unknown = [name for name in algorithms if name not in ALGORITHMS]
    if unknown or not algorithms:
        raise ConfigError([f"algorithm {(unknown or [''])[0]!r}: rsa or ed25519"])
    if selector is not None and len(algorithms) > 1:
        raise ConfigError(["a selector names one key: give one algorithm"])
    if active:
        signing = {k.algorithm for k in load_keys(dkim_dir, domain) if k.state == "active"}
        clash = [name for name in algorithms if ALGORITHMS[name] in signing]
        if clash:
            raise ConfigError(
                [f"{domain} already has an active {clash[0]} key: use qtoaster dkim rotate"]
            )
    made = []
    for name in algorithms:
        key = generate(dkim_dir, domain, name, selector)
        made.append(set_state(dkim_dir, key, "active") if active else key)
    return made


def set_state(dkim_dir: Path, key: DkimKey, state: str, now: float | None = None) -> DkimKey:
    """Move ``key`` to ``state`` (and record when)."""
    if state not in STATES:
        raise ValueError(state)
    now = time.time() if now is None else now
    where = dkim_dir / key.domain
    entries = _read_state(where)
    if key.selector not in entries:
        raise KeyStoreError(f"{key.domain} has no key with selector {key.selector}")
    entries[key.selector] = {**entries[key.selector], "state": state, "since": now}
    _write_state(where, entries)
    return replace(key, state=state, since=now)


def delete(dkim_dir: Path, domain: str, selector: str) -> DkimKey:
    """Remove a key: its state entry first (it stops signing at the next start), then its
    file.  KeyStoreError if there is no such key."""
    domain, selector = check_domain(domain), check_selector(selector)
    found = [k for k in load_keys(dkim_dir, domain) if k.selector == selector]
    if not found:
        raise KeyStoreError(f"{domain} has no key with selector {selector}")
    where = dkim_dir / domain
    entries = _read_state(where)
    del entries[selector]
    _write_state(where, entries)
    try:
        (where / f"{selector}.pem").unlink()
    except FileNotFoundError:
        pass
    return found[0]


# -- rotation --------------------------------------------------------------------------

Lookup = Callable[[str], Sequence[str] | None]  # TXT strings joined per record; None: failed


@dataclass(frozen=True, slots=True)
class RotateStep:
    what: str  # one line saying what was done or seen
    records: tuple[DkimKey, ...] = ()  # keys whose records must be published


def rotate(
    dkim_dir: Path,
    domain: str,
    algorithms: Sequence[str],
    *,
    grace: float,
    rotate_after: float,
    lookup: Lookup,
    now: float | None = None,
) -> tuple[list[RotateStep], bool]:
    """One run of the rotation state machine for ``domain`` (docs/dkim.md); returns what it
    did and whether every DNS lookup it needed answered (False: run it again later).

    1. a retiring key ``grace`` seconds past its retirement is deleted;
    2. a pending key whose TXT record is published and matches becomes active, and the
       active key of its algorithm becomes retiring;
    3. for each algorithm with no pending key, whose active key is missing or older than
       ``rotate_after``: a new pending key is made (its record is to be published).
    """
    domain = check_domain(domain)
    now = time.time() if now is None else now
    steps: list[RotateStep] = []
    answered = True
    keys = load_keys(dkim_dir, domain)
    for key in keys:
        if key.state == "retiring" and key.since + grace <= now:
            delete(dkim_dir, domain, key.selector)
            steps.append(RotateStep(f"deleted retired key {key.selector} ({key.algorithm})"))
    keys = load_keys(dkim_dir, domain)
    for key in [k for k in keys if k.state == "pending"]:
        found = lookup(key.record_name())
        if found is None:
            answered = False
            steps.append(RotateStep(f"{key.record_name()}: DNS lookup failed; try again later"))
            continue
        if not any(_matches(text, key) for text in found):
            what = "not published yet" if not found else "published but does not match"
            steps.append(RotateStep(f"{key.record_name()}: {what}; waiting", (key,)))
            continue
        for old in keys:
            if old.state == "active" and old.algorithm == key.algorithm:
                set_state(dkim_dir, old, "retiring", now)
                steps.append(RotateStep(f"key {old.selector} ({old.algorithm}) now retiring"))
        set_state(dkim_dir, key, "active", now)
        steps.append(RotateStep(f"key {key.selector} ({key.algorithm}) now active"))
    keys = load_keys(dkim_dir, domain)
    for name in algorithms:
        alg = ALGORITHMS[name]
        mine = [k for k in keys if k.algorithm == alg]
        if any(k.state == "pending" for k in mine):
            continue
        active = [k for k in mine if k.state == "active"]
        if active and all(k.since + rotate_after > now for k in active):
            continue
        made = generate(dkim_dir, domain, name, now=now)
        steps.append(RotateStep(f"new key {made.selector} ({alg}) pending: publish", (made,)))
    if not steps:
        steps.append(RotateStep("nothing to do"))
    return steps, answered


def _matches(text: str, key: DkimKey) -> bool:
    """The published record's p= is this key's (tags parsed per RFC 6376 3.6.1)."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        name, eq, value = part.partition("=")
        if eq:
            tags[name.strip()] = "".join(value.split())
    k = tags.get("k", "rsa")
    return tags.get("p") == key.public and k == _K[key.algorithm]


# -- files -----------------------------------------------------------------------------


def _date_selector(now: float, alg: str, entries: dict[str, Any], where: Path) -> str:
    base = time.strftime("%Y%m%d", time.gmtime(now)) + _SUFFIX[alg]
    selector, n = base, 1
    while selector in entries or (where / f"{selector}.pem").exists():
        n += 1
        selector = f"{base}{n}"
    return selector


def _mkdir(path: Path) -> None:
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        if path.is_symlink() or not path.is_dir():
            raise KeyStoreError(f"{path}: not a directory") from None


def _load_pem(path: Path) -> PrivateKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyStoreError(f"{path}: unable to read: {exc.strerror or exc}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyStoreError(f"{path}: not a usable private key: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise KeyStoreError(f"{path}: neither an RSA nor an Ed25519 key")
    return key


def _public_b64(key: PrivateKey) -> str:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
    else:
        raw = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    return base64.b64encode(raw).decode("ascii")


def _read_state(where: Path) -> dict[str, Any]:
    path = where / STATE_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise KeyStoreError(f"{path}: unable to read: {exc.strerror or exc}") from None
    try:
        data = json.loads(raw)
        entries: dict[str, Any] = {}
        for selector, entry in data.items():
            check_selector(selector)
            if entry["algorithm"] not in _SUFFIX or entry["state"] not in STATES:
                raise ValueError(selector)
            entries[selector] = {
                "algorithm": entry["algorithm"],
                "state": entry["state"],
                "created": float(entry["created"]),
                "since": float(entry["since"]),
            }
    except (ValueError, TypeError, KeyError, AttributeError, ConfigError) as exc:
        raise KeyStoreError(f"{path}: damaged ({type(exc).__name__}: {exc})") from None
    return entries


def _write_state(where: Path, entries: dict[str, Any]) -> None:
    path = where / STATE_FILE
    temporary = where / f".{STATE_FILE}.{os.getpid()}"
    data = json.dumps(entries, indent=1, sort_keys=True).encode() + b"\n"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    fsync_dir(where)
