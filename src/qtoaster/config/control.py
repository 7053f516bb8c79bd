"""qmail control files -> one frozen `Controls` (spec sections 2, 3.5, 15).

Reading rules follow qmail-1.03 control.c byte for byte:

- "readline" files use only the first line, trailing spaces, tabs and the newline
  stripped (a carriage return is NOT stripped, as in qmail);
- integer files take the leading decimal digits of that line, else the default;
- "readfile" list files drop blank lines and lines starting with ``#`` after
  stripping trailing blanks; leading blanks are kept;
- a missing file (ENOENT) means "use the default"; any other read error is a
  problem (qmail-smtpd: ``421 unable to read controls``).

Invariants: `load_controls` either returns a complete `Controls` or raises one
`ConfigError` listing every problem it found; domains in sets and map keys are
ASCII-lower-cased (qmail's constmap compares case-insensitively for A-Z only), and a
domain written with U-labels (``bücher.example``) is kept as its A-labels
(``core/domain.py``), so either spelling in a file matches either spelling in mail.
Nothing here is read again after loading: a reload builds a new `Controls`.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from qtoaster.core.domain import domain_key
from qtoaster.core.envelope import decode
from qtoaster.core.errors import ConfigError

# qmail-send caps both concurrencies at the compile-time SPAWN limit (qmail-send.9).
SPAWN_LIMIT = 120

_TRAILING_BLANKS = "\n \t"
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_LEADING_DIGITS = re.compile(r"[0-9]*")


def ascii_lower(text: str) -> str:
    """Lower-case A-Z only, as qmail's case_lowerb does (other bytes compare exactly)."""
    return text.translate(_ASCII_LOWER)


def _read_bytes(path: Path) -> bytes | None:
    """The file's bytes, or None for ENOENT only (ENOTDIR, EACCES, EISDIR... raise)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def read_line(path: Path) -> str | None:
    """First line of *path*, trailing blanks stripped; None if the file does not exist.

    An existing empty file gives ``""`` (qmail: present, empty value).
    Other errors (EACCES, EISDIR, ...) propagate as OSError.
    """
    raw = _read_bytes(path)
    if raw is None:
        return None
    first = raw.split(b"\n", 1)[0]
    return decode(first).rstrip(_TRAILING_BLANKS)


def read_list(path: Path) -> list[str]:
    """One entry per line; blank and ``#`` lines dropped; [] if the file does not exist."""
    raw = _read_bytes(path)
    if raw is None:
        return []
    entries = []
    for line in decode(raw).split("\n"):
        line = line.rstrip(_TRAILING_BLANKS)
        if line and not line.startswith("#"):
            entries.append(line)
    return entries


def parse_int(line: str | None, default: int) -> int:
    """qmail's control_readint: leading decimal digits of the line, else *default*."""
    if line is None:
        return default
    digits = _LEADING_DIGITS.match(line)
    assert digits is not None  # [0-9]* always matches
    return int(digits.group()) if digits.group() else default


def read_int(path: Path, default: int) -> int:
    """Integer control file (spec 2): unsigned decimal prefix of the first line, else default."""
    return parse_int(read_line(path), default)


@dataclass(frozen=True, slots=True)
class Controls:
    me: str
    smtpgreeting: str
    rcpthosts: frozenset[str] | None
    morercpthosts: frozenset[str]
    locals: frozenset[str]
    defaultdomain: str
    localiphost: str
    envnoathost: str
    databytes: int
    timeoutsmtpd: int
    queuelifetime: int
    concurrencylocal: int
    concurrencyremote: int
    bouncefrom: str
    bouncehost: str
    doublebounceto: str
    doublebouncehost: str
    percenthack: frozenset[str]
    virtualdomains: Mapping[str, str]

    @classmethod
    def for_me(cls, me: str, **overrides: object) -> Controls:
        """qmail's defaults for a host named *me* (for tests and tools), with overrides."""
        values: dict[str, object] = {
            "me": me,
            "smtpgreeting": me,
            "rcpthosts": None,
            "morercpthosts": frozenset(),
            "locals": frozenset({ascii_lower(me)}),
            "defaultdomain": me,
            "localiphost": me,
            "envnoathost": me,
            "databytes": 0,
            "timeoutsmtpd": 1200,
            "queuelifetime": 604800,
            "concurrencylocal": 10,
            "concurrencyremote": 20,
            "bouncefrom": "MAILER-DAEMON",
            "bouncehost": me,
            "doublebounceto": "postmaster",
            "doublebouncehost": me,
            "percenthack": frozenset(),
            "virtualdomains": MappingProxyType({}),
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    def rcpthosts_allows(self, domain: str) -> bool:
        """May mail for *domain* (the part after the last ``@``) be accepted? (spec 3.5)

        ``""`` stands for an address without ``@``: always allowed.  No rcpthosts
        file: everything is allowed (qmail's open-relay default).  Otherwise the
        lower-cased domain and every suffix starting at a dot are looked up in
        rcpthosts, then in morercpthosts.
        """
        if self.rcpthosts is None or not domain:
            return True
        domain = domain_key(domain)
        keys = [domain] + [domain[i:] for i, ch in enumerate(domain) if ch == "." and i > 0]
        if any(key in self.rcpthosts for key in keys):
            return True
        return any(key in self.morercpthosts for key in keys)


class _Reader:
    """Reads control files, turning every failure into a problem line instead of raising."""

    def __init__(self, control_dir: Path) -> None:
        self.dir = control_dir
        self.problems: list[str] = []

    def _name(self, name: str) -> str:
        return f"{self.dir.name}/{name}"

    def _guard(self, name: str, raw: str | list[str] | None) -> None:
        lines = [raw] if isinstance(raw, str) else raw or []
        if any(line.endswith("\r") for line in lines):
            self.problems.append(
                f"{self._name(name)}: line ends with a carriage return (DOS line endings?); "
                "qmail would treat it as part of the value"
            )

    def line(self, name: str) -> str | None:
        try:
            value = read_line(self.dir / name)
        except OSError as exc:
            self.problems.append(f"{self._name(name)}: unable to read: {exc.strerror or exc}")
            return None
        self._guard(name, value)
        return value

    def text(self, name: str, default: str) -> str:
        value = self.line(name)
        return default if value is None else value

    def list(self, name: str) -> list[str] | None:
        """Entries, or None if the file does not exist (or could not be read)."""
        path = self.dir / name
        try:
            if _read_bytes(path) is None:
                return None
            entries = read_list(path)
        except OSError as exc:
            self.problems.append(f"{self._name(name)}: unable to read: {exc.strerror or exc}")
            return None
        self._guard(name, entries)
        return entries

    def domains(self, name: str) -> frozenset[str] | None:
        entries = self.list(name)
        return None if entries is None else frozenset(domain_key(e) for e in entries)

    def integer(self, name: str, default: int) -> int:
        value = self.line(name)
        if value is not None and not re.fullmatch(r"[0-9]+", value):
            # qmail silently uses the leading digits ("10M" -> 10 bytes): almost
            # always a mistake, so config check reports it.
            self.problems.append(
                f"{self._name(name)}: {value!r} is not a plain decimal number "
                f"(qmail would read it as {parse_int(value, default)})"
            )
        return parse_int(value, default)

    def mapping(self, name: str) -> Mapping[str, str]:
        """``key:value`` lines split at the FIRST colon; later duplicates win (constmap)."""
        result: dict[str, str] = {}
        for entry in self.list(name) or []:
            key, colon, value = entry.partition(":")
            if not colon:
                self.problems.append(f"{self._name(name)}: {entry!r} has no ':' (ignored by qmail)")
                continue
            result[domain_key(key)] = value
        return MappingProxyType(result)


def load_controls(control_dir: Path) -> Controls:
    """Read every control file qtoaster uses; ConfigError listing every problem found."""
    reader = _Reader(control_dir)
    if not control_dir.is_dir():
        raise ConfigError([f"{control_dir}: control directory missing (run qtoaster init)"])
    me = reader.line("me")
    if me is None and not reader.problems:
        reader.problems.append(
            f"{reader._name('me')}: missing; it names this host and is required "
            "(qmail-smtpd refuses to start without it)"
        )
    elif me == "":
        reader.problems.append(f"{reader._name('me')}: empty; it must name this host")
    me = me or ""
    controls = _build(reader, me)
    if reader.problems:
        raise ConfigError(reader.problems)
    return controls


def _build(reader: _Reader, me: str) -> Controls:
    timeoutsmtpd = reader.integer("timeoutsmtpd", 1200)
    locals_ = reader.domains("locals")
    return Controls(
        me=me,
        smtpgreeting=reader.text("smtpgreeting", me),
        rcpthosts=reader.domains("rcpthosts"),
        morercpthosts=reader.domains("morercpthosts") or frozenset(),
        locals=frozenset({ascii_lower(me)}) if locals_ is None else locals_,
        defaultdomain=reader.text("defaultdomain", me),
        localiphost=reader.text("localiphost", me),
        envnoathost=reader.text("envnoathost", me),
        databytes=reader.integer("databytes", 0),
        # qmail-smtpd: "if (timeout <= 0) timeout = 1"
        timeoutsmtpd=timeoutsmtpd if timeoutsmtpd > 0 else 1,
        queuelifetime=reader.integer("queuelifetime", 604800),
        concurrencylocal=min(reader.integer("concurrencylocal", 10), SPAWN_LIMIT),
        concurrencyremote=min(reader.integer("concurrencyremote", 20), SPAWN_LIMIT),
        bouncefrom=reader.text("bouncefrom", "MAILER-DAEMON"),
        bouncehost=reader.text("bouncehost", me),
        doublebounceto=reader.text("doublebounceto", "postmaster"),
        doublebouncehost=reader.text("doublebouncehost", me),
        percenthack=reader.domains("percenthack") or frozenset(),
        virtualdomains=reader.mapping("virtualdomains"),
    )


# Every name control/ may hold: what qtoaster reads (this module, config/rolecontrols.py,
# tls/, remote/) and what a qmail toaster's patches read that qtoaster ignores, so a
# control/ copied across from an old toaster is not reported. config check warns about
# anything else: a misspelt name (``databyts``) is otherwise silently ignored, as qmail does.
KNOWN_CONTROL_FILES = frozenset(
    {
        # read by qtoaster
        "badhelo", "badmailfrom", "badmailfromnorelay", "badmailto", "badmailtonorelay",
        "bouncefrom", "bouncehost", "clientca.pem", "clientcert.pem", "clientcrl.pem",
        "concurrencylocal", "concurrencyremote", "databytes", "defaultdomain", "dh1024.pem",
        "doublebouncehost", "doublebounceto", "envnoathost", "greylistpass", "helohost",
        "localiphost", "locals", "me", "mfcheck", "morercpthosts", "notlshosts", "outgoingip",
        "percenthack", "queuelifetime", "rcpthosts", "servercert.pem", "signatures",
        "smtpgreeting", "smtproutes", "tarpitcount", "tarpitdelay", "timeoutconnect",
        "timeoutremote", "timeoutsmtpd", "tlsclientciphers", "tlsclients", "tlshosts",
        "tlsserverciphers", "virtualdomains",
        # the previous certificate, kept by qtoaster cert install and cert acme
        "servercert.pem.old", "clientcert.pem.old",
        # qmail's and its toaster patches', not read by qtoaster
        "concurrencyincoming", "defaulthost", "dh512.pem", "domainkeys", "idhost",
        "morercpthosts.cdb", "plusdomain", "qmqpservers", "rsa512.pem", "smtpplugins",
        "spfbehavior", "spfexp", "spfguess", "spfrules", "blacklists", "validrcptto.cdb",
    }
)  # fmt: skip


def unknown_control_files(control_dir: Path) -> list[str]:
    """A warning for every entry of control/ that is no known control file, with the
    nearest known name when there is one (difflib). Hidden files are an editor's, not
    the operator's, and are left alone."""
    try:
        names = sorted(os.listdir(control_dir))
    except OSError:
        return []  # load_controls reports a missing or unreadable control/
    warnings = []
    for name in names:
        if name.startswith(".") or name in KNOWN_CONTROL_FILES:
            continue
        close = difflib.get_close_matches(name, KNOWN_CONTROL_FILES, n=1, cutoff=0.75)
        hint = f"; did you mean {close[0]}?" if close else ""
        warnings.append(
            f"{control_dir.name}/{name}: not a control file qtoaster or qmail knows "
            f"(it is ignored){hint}"
        )
    return warnings


__all__ = [
    "KNOWN_CONTROL_FILES",
    "SPAWN_LIMIT",
    "Controls",
    "ascii_lower",
    "load_controls",
    "parse_int",
    "read_int",
    "read_line",
    "read_list",
    "unknown_control_files",
]
