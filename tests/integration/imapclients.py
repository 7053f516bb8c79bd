"""Real IMAP clients driven against a server at host:port, each returning what it saw.

Used by the integration tests to check an IMAP server with the clients people run: isync
(``mbsync``), getmail6, curl, s-nail, and Python's imaplib. Every driver takes the same
``Server`` (host, port for plain/STARTTLS, imaps port, user, password, CA file to trust) and
a ``tls`` mode: ``"none"`` (plain LOGIN, the server must allow it), ``"starttls"`` or
``"imaps"``. Each client is told to trust ``cafile`` (the test's self-signed certificate)
rather than to skip verification, wherever it can (s-nail: ``tls-ca-file``; curl:
``--cacert``; mbsync: ``CertificateFile``; getmail: ``ca_certs``).

Invariants: every subprocess has a timeout and its own HOME/config under the caller's
directory (no user configuration is read: s-nail ``-:/``, getmail ``--getmaildir``, mbsync
``-c``); a client that fails raises ClientError with its output.
"""

from __future__ import annotations

import imaplib
import os
import re
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

TIMEOUT = 60.0
NOBODY = 65534


class ClientError(RuntimeError):
    pass


@dataclass(frozen=True)
class Server:
    host: str
    port: int  # plain IMAP (STARTTLS offered)
    imaps_port: int
    user: str
    password: str
    cafile: Path | None = None


@dataclass(frozen=True)
class LocalMessage:
    """A message in a local Maildir: its Maildir flags (the letters after ``:2,``) and
    Message-ID header."""

    name: str
    flags: str
    message_id: str


def have(program: str) -> bool:
    return shutil.which(program) is not None


def _run(
    argv: list[str], cwd: Path, env: dict[str, str] | None = None, stdin: bytes = b""
) -> bytes:
    done = subprocess.run(
        argv, cwd=cwd, input=stdin, capture_output=True, timeout=TIMEOUT,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd), "LC_ALL": "C.UTF-8",
             **(env or {})},
    )  # fmt: skip
    if done.returncode != 0:
        raise ClientError(
            f"{argv[0]} exited {done.returncode}:\n{done.stdout.decode(errors='replace')}"
            f"\n{done.stderr.decode(errors='replace')}"
        )
    return done.stdout


def message_id(data: bytes) -> str:
    match = re.search(rb"(?im)^message-id:\s*(\S+)", data)
    return match[1].decode() if match else ""


def maildir_state(maildir: Path) -> list[LocalMessage]:
    """Every message in ``maildir``'s new/ and cur/, sorted by Message-ID."""
    found = []
    for sub in ("new", "cur"):
        directory = maildir / sub
        if not directory.is_dir():
            continue
        for entry in directory.iterdir():
            flags = entry.name.rpartition(":2,")[2] if ":2," in entry.name else ""
            found.append(LocalMessage(entry.name, flags, message_id(entry.read_bytes())))
    return sorted(found, key=lambda m: m.message_id)


# --- isync (mbsync) -----------------------------------------------------------------------


@dataclass
class MbsyncResult:
    pulled: list[LocalMessage]  # the local INBOX after the first sync
    pushed: list[LocalMessage]  # after the local change and the second sync


def mbsync_sync(
    local_dir: Path,
    server: Server,
    tls: str = "starttls",
    flag_message_id: str | None = None,
    add_message: bytes | None = None,
) -> MbsyncResult:
    """Pull INBOX into ``local_dir/INBOX`` (a Maildir), then locally add the F (flagged)
    flag to the message with ``flag_message_id`` and drop ``add_message`` into new/, and sync
    again (mbsync propagates both to the server: STORE +FLAGS and APPEND)."""
    local_dir.mkdir(parents=True, exist_ok=True)
    port = server.imaps_port if tls == "imaps" else server.port
    ssl_type = {"none": "None", "starttls": "STARTTLS", "imaps": "IMAPS"}[tls]
    cert = f"CertificateFile {server.cafile}\n" if server.cafile and tls != "none" else ""
    config = local_dir / "mbsyncrc"
    config.write_text(
        f"IMAPAccount acct\nHost {server.host}\nPort {port}\nUser {server.user}\n"
        f'Pass "{server.password}"\nSSLType {ssl_type}\n{cert}AuthMechs LOGIN\n'
        "PipelineDepth 8\n\n"
        "IMAPStore far\nAccount acct\n\n"
        f"MaildirStore near\nPath {local_dir}/\nInbox {local_dir}/INBOX\nSubFolders Verbatim\n\n"
        "Channel ch\nFar :far:\nNear :near:\nPatterns INBOX\nCreate Near\nSync All\n"
        f"Expunge None\nSyncState *\n"
    )
    argv = ["mbsync", "-c", str(config), "-a"]
    _run(argv, local_dir)
    inbox = local_dir / "INBOX"
    pulled = maildir_state(inbox)
    if flag_message_id is not None:
        target = next(m for m in pulled if m.message_id == flag_message_id)
        old = next(p for p in inbox.glob(f"*/{target.name}"))
        base, _, flags = old.name.partition(":2,")
        new_flags = "".join(sorted(set(flags) | {"F"}))
        old.rename(inbox / "cur" / f"{base}:2,{new_flags}")
    if add_message is not None:
        (inbox / "new" / "1700000000.local1.bench").write_bytes(add_message)
    _run(argv, local_dir)
    return MbsyncResult(pulled, maildir_state(inbox))


# --- getmail6 ----------------------------------------------------------------------------


def getmail_fetch(
    local_dir: Path, server: Server, tls: str = "imaps", delete: bool = False
) -> list[bytes]:
    """getmail6 retrieves every message of INBOX (read_all) into ``local_dir/Maildir``;
    returns the messages it wrote. ``tls``: "imaps" (SimpleIMAPSSLRetriever, ca_certs) or
    "none" (SimpleIMAPRetriever: getmail6 6.18 has no STARTTLS for IMAP).

    getmail refuses to deliver as root: as root it runs as nobody (65534) in a private
    directory under /var/tmp, and the Maildir is moved to ``local_dir`` afterwards."""
    if os.geteuid() == 0:
        work = Path(tempfile.mkdtemp(prefix="qtoaster-getmail-", dir="/var/tmp"))
        try:
            work.chmod(0o755)
            os.chown(work, NOBODY, NOBODY)
            got = _getmail(work, server, tls, delete, as_nobody=True)
            local_dir.mkdir(parents=True, exist_ok=True)
            shutil.copytree(work / "Maildir", local_dir / "Maildir", dirs_exist_ok=True)
            return got
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return _getmail(local_dir, server, tls, delete, as_nobody=False)


def _getmail(
    local_dir: Path, server: Server, tls: str, delete: bool, as_nobody: bool
) -> list[bytes]:
    maildir = local_dir / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    if tls == "starttls":
        raise ValueError("getmail6's IMAP retrievers do not do STARTTLS")
    retriever = "SimpleIMAPSSLRetriever" if tls == "imaps" else "SimpleIMAPRetriever"
    port = server.imaps_port if tls == "imaps" else server.port
    ca = f"ca_certs = {server.cafile}\n" if tls == "imaps" and server.cafile else ""
    rc = local_dir / "getmailrc"
    rc.write_text(
        f"[retriever]\ntype = {retriever}\nserver = {server.host}\nport = {port}\n"
        f'username = {server.user}\npassword = {server.password}\nmailboxes = ("INBOX",)\n{ca}'
        f"\n[destination]\ntype = Maildir\npath = {maildir}/\n"
        f"\n[options]\nread_all = true\ndelete = {str(delete).lower()}\nverbose = 1\n"
        "message_log_syslog = false\n"
    )
    argv = ["getmail", "--getmaildir", str(local_dir), "--rcfile", str(rc)]
    if as_nobody:
        for path in [local_dir, *local_dir.rglob("*")]:
            os.chown(path, NOBODY, NOBODY)
        argv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv]
    _run(argv, local_dir)
    return sorted(
        (p.read_bytes() for sub in ("new", "cur") for p in (maildir / sub).iterdir()),
        key=message_id,
    )


# --- curl --------------------------------------------------------------------------------


def curl_imap(
    url: str, server: Server, request: str | None = None, starttls: bool = False
) -> bytes:
    """``curl URL`` as ``server.user``: ``imap://host:port/`` lists the mailboxes,
    ``imap://host:port/INBOX;UID=1`` fetches a message, ``imap://host:port/INBOX?ALL``
    searches; ``imaps://`` for implicit TLS; ``starttls`` requires STARTTLS (--ssl-reqd).
    ``request`` replaces the command (-X), e.g. "EXAMINE INBOX"."""
    argv = ["curl", "--silent", "--show-error", "--max-time", str(int(TIMEOUT))]
    argv += ["--user", f"{server.user}:{server.password}"]
    if server.cafile:
        argv += ["--cacert", str(server.cafile)]
    if starttls:
        argv.append("--ssl-reqd")
    if request:
        argv += ["-X", request]
    return _run([*argv, url], Path("/tmp"))


# --- s-nail ------------------------------------------------------------------------------


def snail_session(work_dir: Path, server: Server, commands: list[str], tls: str = "imaps") -> str:
    """A scripted s-nail session on INBOX (batch mode ``-#``, no user or system
    configuration: ``-:/``): ``commands`` are s-nail commands, e.g. ``headers``, ``print 1``,
    ``delete 2``, ``quit``. Returns what s-nail printed."""
    work_dir.mkdir(parents=True, exist_ok=True)
    scheme, port = ("imaps", server.imaps_port) if tls == "imaps" else ("imap", server.port)
    user = server.user.replace("@", "%40")
    folder = f"{scheme}://{user}@{server.host}:{port}/INBOX"
    options = [
        "-:/", "-#", "-Sv15-compat", "-Sheader", "-Sscreen=10000",
        # s-nail looks the password up by "password-USER@HOST:PORT" (USER %-encoded), then
        # shorter forms: give the most specific and the plain one.
        f"-Spassword-{user}@{server.host}:{port}={server.password}",
        f"-Spassword={server.password}",
    ]  # fmt: skip
    if server.cafile:
        options += [f"-Stls-ca-file={server.cafile}", "-Stls-ca-no-defaults"]
    if tls == "starttls":
        options.append("-Simap-use-starttls")
    script = ("\n".join(commands) + "\n").encode()
    return _run(["s-nail", *options, "-f", folder], work_dir, stdin=script).decode(errors="replace")


# --- imaplib -----------------------------------------------------------------------------


def imaplib_connect(server: Server, tls: str = "starttls") -> imaplib.IMAP4:
    """A logged-in imaplib session (IMAP4rev1), trusting ``server.cafile``."""
    context = ssl.create_default_context(cafile=str(server.cafile) if server.cafile else None)
    client: imaplib.IMAP4
    if tls == "imaps":
        client = imaplib.IMAP4_SSL(
            server.host, server.imaps_port, ssl_context=context, timeout=TIMEOUT
        )
    else:
        client = imaplib.IMAP4(server.host, server.port, timeout=TIMEOUT)
        if tls == "starttls":
            client.starttls(context)
    client.login(server.user, server.password)
    return client


def imaplib_append(server: Server, data: bytes, flags: str = "", mailbox: str = "INBOX") -> None:
    client = imaplib_connect(server)
    try:
        status, reply = client.append(mailbox, flags or None, None, data)
        if status != "OK":
            raise ClientError(f"APPEND: {reply!r}")
    finally:
        client.logout()


def imaplib_state(server: Server, mailbox: str = "INBOX") -> dict[int, tuple[set[str], str]]:
    """UID -> (flags, Message-ID) of every message in ``mailbox`` (EXAMINE: read-only)."""
    client = imaplib_connect(server)
    try:
        status, _ = client.select(mailbox, readonly=True)
        if status != "OK":
            raise ClientError(f"EXAMINE {mailbox} failed")
        status, data = client.uid(
            "FETCH", "1:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])"
        )
        state: dict[int, tuple[set[str], str]] = {}
        uid = 0
        for item in data:
            # imaplib gives (text before the literal, literal) then the text after it as
            # bytes: UID and FLAGS may be on either side of the header literal.
            head, body = item if isinstance(item, tuple) else (item, b"")
            if head is None:
                continue
            if (found := re.search(rb"UID (\d+)", head)) is not None:
                uid = int(found[1])
            flags_match = re.search(rb"FLAGS \(([^)]*)\)", head)
            flags, mid = state.get(uid, (set(), ""))
            if flags_match:  # \Recent belongs to the session, not the message
                flags = set(flags_match[1].decode().split()) - {"\\Recent"}
            state[uid] = (flags, message_id(body) or mid)
        state.pop(0, None)
        return state
    finally:
        client.logout()


# --- what the client tests share (test_imap_clients.py, test_imap_clients_dovecot.py) ----

USER = "alice@example.test"  # whose INBOX the client tests reset and read


def sample(n: int) -> bytes:
    """Sample message ``n`` (Subject ``sample n``, Message-ID ``<samplen@example.test>``)."""
    return (
        f"From: Bob <bob@example.test>\r\nTo: {USER}\r\nSubject: sample {n}\r\n"
        f"Date: Tue, 25 Nov 2026 07:00:0{n} +0000\r\nMessage-ID: <sample{n}@example.test>\r\n"
        f"\r\nBody of sample {n}.\r\nSecond line.\r\n"
    ).encode()


def reset_inbox(server: Server) -> None:
    """The INBOX holding exactly sample 1..3 (whatever was there expunged, then appended)."""
    client = imaplib_connect(server)
    try:
        _, data = client.select("INBOX")
        if int(data[0] or 0):  # "1:*" in an empty mailbox is BAD on Dovecot
            client.store("1:*", "+FLAGS.SILENT", "(\\Deleted)")
            client.expunge()
    finally:
        client.logout()
    for n in (1, 2, 3):
        imaplib_append(server, sample(n))


def needs(program: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Skip the test when ``program`` is not installed."""
    return pytest.mark.skipif(not have(program), reason=f"{program} not installed")
