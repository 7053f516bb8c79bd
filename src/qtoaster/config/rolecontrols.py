"""Control files that one role reads beyond the shared `Controls`, each loaded into a typed
value by one small loader: TLS server and client files, smtpd's checks (mfcheck, tarpit,
signatures, the qregex files) and the remote agent's files (spec 2, 7, 8, 11, 17).

The reading rules are config.control's (qmail's control.c).  Invariants: a loader reads
its files once and returns a frozen value; the role keeps that value until its next
reload, so it reads no file while serving.  Each loader fails exactly as the code that
read the file in place did (an OSError propagates unless the loader says otherwise), so
moving a read here changes no reply, log line or `config check` text.

Deliberately not here: files whose set is open or that qmail reads per use and that are
re-read when they change (``tlshosts/<host>.pem``, ``notlshosts/<host>``,
``tlshosts/exhaustivelist``, ``smtproutes``): see tls.client and remote.agent.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from qtoaster.config.control import ascii_lower, read_int, read_line, read_list
from qtoaster.core.envelope import decode, encode
from qtoaster.core.errors import ConfigError

# -- TLS (spec 7) ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TlsServerControls:
    """The server-side TLS files of a control directory (qmail-tls ``tls_init``)."""

    certfile: Path  # servercert.pem: certificate chain and key; loaded by the TLS context
    ciphers: str  # tlsserverciphers, lines joined with ":"; "" when absent or empty
    tlsclients: frozenset[str]  # ASCII-lower-cased emailAddress values (qmail's constmap)
    tlsclients_exists: bool  # the file is there (even empty): certificates are looked at
    clientca: Path | None  # set only when the file exists
    clientcrl: Path | None
    dhparams: Path | None  # dh1024.pem


def load_tls_server(control_dir: Path) -> TlsServerControls:
    """The TLS server files; OSError if one cannot be read (qmail: ``die_control``)."""

    def present(name: str) -> Path | None:
        path = control_dir / name
        return path if path.exists() else None

    tlsclients_path = control_dir / "tlsclients"
    return TlsServerControls(
        certfile=control_dir / "servercert.pem",
        # control_readfile + "convert all '\\0's except the last one to ':'".
        ciphers=":".join(read_list(control_dir / "tlsserverciphers")),
        tlsclients=frozenset(ascii_lower(x) for x in read_list(tlsclients_path)),
        tlsclients_exists=tlsclients_path.exists(),
        clientca=present("clientca.pem"),
        clientcrl=present("clientcrl.pem"),
        dhparams=present("dh1024.pem"),
    )


def load_tls_client_ciphers(control_dir: Path) -> str:
    """tlsclientciphers, lines joined with ":" ("" when absent); OSError if unreadable."""
    return ":".join(read_list(control_dir / "tlsclientciphers"))


# -- smtpd's checks (spec 8, 9, 10, 11) ------------------------------------------------

TARPIT_DEFAULT_DELAY = 5  # seconds (the tarpitting patch's default)


@dataclass(frozen=True, slots=True)
class TarpitControls:
    count: int  # control/tarpitcount: recipients before the delays start; 0: never
    delay: int  # control/tarpitdelay: seconds per recipient past the count


def load_tarpit(control_dir: Path) -> TarpitControls:
    """tarpitcount (default 0) and tarpitdelay (default 5); OSError if unreadable."""
    return TarpitControls(
        count=read_int(control_dir / "tarpitcount", 0),
        delay=read_int(control_dir / "tarpitdelay", TARPIT_DEFAULT_DELAY),
    )


def load_mfcheck(control_dir: Path) -> int:
    """control/mfcheck as qmail reads an integer (default 0: off); OSError if unreadable."""
    return read_int(control_dir / "mfcheck", 0)


def load_signatures(control_dir: Path) -> tuple[bytes, ...]:
    """control/signatures' entries; () when missing or empty (no scan).

    Read as qmail's control_readfile: trailing blanks stripped, blank and ``#`` lines
    dropped; a line starting with NUL counts as blank and a NUL inside a line splits
    it (sigscheck walks the NUL-separated list).  A read error other than ENOENT is a
    ConfigError (qmail-smtpd: ``421 unable to read controls``).
    """
    path = control_dir / "signatures"
    try:
        lines = read_list(path)
    except OSError as exc:
        raise ConfigError([f"{path}: unable to read: {exc.strerror or exc}"]) from exc
    return tuple(
        piece for line in lines if not line.startswith("\0") for piece in encode(line).split(b"\0")
    )


QREGEX_FILES = ("badhelo", "badmailfrom", "badmailfromnorelay", "badmailto", "badmailtonorelay")

NumberedLines = tuple[tuple[int, str], ...]


def load_numbered_lines(path: Path) -> NumberedLines:
    """A list file's entries with their line numbers (for qregex's messages); () if missing.

    Spec 2 list rules: trailing blanks stripped, blank and ``#`` lines dropped.  OSError
    other than ENOENT propagates (qmail-smtpd: ``421 unable to read controls``).
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return ()
    entries = []
    for number, line in enumerate(decode(raw).split("\n"), start=1):
        line = line.rstrip("\n \t")
        if line and not line.startswith("#"):
            entries.append((number, line))
    return tuple(entries)


# -- the remote agent (spec 17) --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RemoteControls:
    helohost: str | None  # control/helohost; None or "": use control/me
    timeoutconnect: int  # seconds, at least 1 (qmail-remote's default 60)
    timeoutremote: int  # seconds, at least 1 (default 1200)
    outgoingip: str | None  # control/outgoingip; None: the kernel picks the source address


def load_remote(control_dir: Path) -> RemoteControls:
    """The remote agent's control files; OSError if one cannot be read."""
    connect = read_int(control_dir / "timeoutconnect", 60)
    remote = read_int(control_dir / "timeoutremote", 1200)
    return RemoteControls(
        helohost=read_line(control_dir / "helohost") or None,
        timeoutconnect=max(1, connect),
        timeoutremote=max(1, remote),
        outgoingip=read_line(control_dir / "outgoingip") or None,
    )


__all__ = [
    "QREGEX_FILES",
    "TARPIT_DEFAULT_DELAY",
    "NumberedLines",
    "RemoteControls",
    "TarpitControls",
    "TlsServerControls",
    "load_mfcheck",
    "load_numbered_lines",
    "load_remote",
    "load_signatures",
    "load_tarpit",
    "load_tls_client_ciphers",
    "load_tls_server",
]
