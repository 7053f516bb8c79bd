"""``qtoaster serve mailbox``: the mailbox broker, pop3d's and smtpd's one door to a Maildir.

Runs as the mailbox owner (decision 0007); pop3d and smtpd run as users that cannot
enter a Maildir. Listens on :func:`qtoaster.broker.protocol.socket_path`
(``<home>/run/mailbox/mailbox.sock``, mode 0660 in a directory of the mailbox group) and
speaks broker.protocol, one thread per connection (blocking files and flock; a POP3
session holds its connection, and so its lock, from login to QUIT).

It also serves imapd on ``run/mailbox/imap.sock`` (mailboxd/fsserver.py: asyncio in a
thread of its own, file requests confined to the ticket's Maildir).

A pop3d connection: OPEN(ticket) -> the ticket is redeemed at the auth role (which issued
it at that user's successful login, single use, 60 s) for the address and Maildir; then
the Maildir is locked (maildir.lock, one session per mailbox) and scanned
(maildir.mailbox.Mailbox.open), and the listing answered. FETCH n -> an open read-only
descriptor of message n (SCM_RIGHTS). COMMIT -> maildir.mailbox.Mailbox.commit for the
deleted numbers, then unlock. A connection that ends without COMMIT unlocks and changes
nothing (RFC 1939 6, as a dropped POP3 session always did).

Invariants:
- started as root (``peers`` given), the peer's uid (SO_PEERCRED) decides: pop3d's may
  OPEN/FETCH/COMMIT, smtpd's only QUOTA; anyone else gets ``denied``. Not started as root
  every role is one uid and everything is allowed;
- no Maildir is touched before its ticket was redeemed, and a connection serves only the
  one Maildir its ticket named; one OPEN per connection;
- QUOTA reads only a Maildir under ``<home>/domains`` (the real path);
- nothing a client sends raises out of a connection's thread: a bad line gets ``bad`` and
  the connection is closed; a line over MAX_REQUEST closes it too.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import socketserver
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qtoaster.auth.client import redeem
from qtoaster.auth.protocol import ProtocolError as AuthProtocolError
from qtoaster.auth.protocol import socket_path as auth_socket_path
from qtoaster.broker.protocol import (
    MAX_REQUEST,
    Answer,
    CommitRequest,
    FetchRequest,
    OpenRequest,
    ProtocolError,
    QuotaRequest,
    Request,
    decode_request,
    encode_answer,
    socket_path,
)
from qtoaster.config.loader import load_config
from qtoaster.core.home import Home
from qtoaster.mailboxd.fsserver import FsServer
from qtoaster.maildir.lock import MailboxLock
from qtoaster.maildir.mailbox import Mailbox, MailboxError, MessageNumberError
from qtoaster.maildir.quota import Quota, percent_used

log = logging.getLogger("qtoaster.mailbox")
SOCKET_MODE = 0o660
# A client that sends nothing for this long holds no thread: pop3d's own idle limit is
# [pop3d] timeout (20 minutes by default) per command; a session may idle that long.
IDLE_SECONDS = 3600.0


@dataclass(frozen=True, slots=True)
class Peers:
    """Which uids may ask what (started as root); None: not root, everyone may."""

    pop3d: int | None = None
    smtpd: int | None = None
    imapd: int | None = None  # imap.sock (mailboxd/fsserver.py): only this uid is served

    @property
    def root(self) -> bool:
        """Started as root: some role's uid is known, the others are refused."""
        return not (self.pop3d is None and self.smtpd is None and self.imapd is None)

    def may(self, uid: int | None, request: Request) -> bool:
        if not self.root:
            return True
        if isinstance(request, QuotaRequest):
            return uid is not None and uid == self.smtpd
        return uid is not None and uid == self.pop3d


def _peer_uid(sock: socket.socket) -> int | None:
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    return int(struct.unpack("3i", raw)[1])


class Session:
    """One connection's state: the Maildir it opened, its lock and snapshot."""

    def __init__(self, broker: Broker, sock: socket.socket) -> None:
        self.broker = broker
        self.sock = sock
        self.uid = _peer_uid(sock)
        self.lock: MailboxLock | None = None
        self.mailbox: Mailbox | None = None
        self.opened = False
        self.done = False

    def serve(self) -> None:
        reader = self.sock.makefile("rb")
        try:
            while not self.done:
                line = reader.readline(MAX_REQUEST + 1)
                if not line:
                    break
                if not line.endswith(b"\n"):
                    self._send(Answer(False, "bad", "line too long"))
                    break
                self._one(line)
        except OSError as exc:
            log.debug("mailboxd mailbox connection: %s", exc)
        finally:
            reader.close()
            self.close()

    def close(self) -> None:
        """Unlock (without COMMIT nothing changed) and close."""
        lock, self.lock = self.lock, None
        if lock is not None:
            lock.release()
        self.sock.close()

    def _send(self, answer: Answer, fd: int | None = None) -> None:
        data = encode_answer(answer)
        if fd is None:
            self.sock.sendall(data)
            return
        sent = socket.send_fds(self.sock, [data], [fd])
        if sent < len(data):
            self.sock.sendall(data[sent:])

    def _one(self, line: bytes) -> None:
        try:
            request = decode_request(line)
        except ProtocolError as exc:
            self._send(Answer(False, "bad", f"bad request: {exc}"))
            self.done = True
            return
        if not self.broker.peers.may(self.uid, request):
            log.warning("mailboxd refused %s from uid %s", type(request).__name__, self.uid)
            self._send(Answer(False, "denied", "not allowed for this peer"))
            self.done = True
            return
        if isinstance(request, OpenRequest):
            self._open(request)
        elif isinstance(request, FetchRequest):
            self._fetch(request)
        elif isinstance(request, CommitRequest):
            self._commit(request)
        else:
            self._quota(request)

    def _open(self, request: OpenRequest) -> None:
        if self.opened:
            self._send(Answer(False, "bad", "one OPEN per connection"))
            self.done = True
            return
        self.opened = True
        try:
            ticket = redeem(auth_socket_path(self.broker.home), request.ticket)
        except (OSError, AuthProtocolError) as exc:
            log.warning("mailboxd cannot redeem a ticket: %s", exc)
            self._send(Answer(False, "temp", f"auth role unavailable: {exc}"))
            return
        if not ticket.ok:
            log.warning(
                "mailboxd refused a ticket that is unknown, used or expired (uid %s)", self.uid
            )
            self._send(Answer(False, "ticket", "unknown, used or expired ticket"))
            self.done = True
            return
        if not ticket.maildir:
            self._send(Answer(False, "maildir", "this user has no $HOME/Maildir"))
            return
        maildir = Path(ticket.maildir)
        try:
            lock = MailboxLock.acquire(maildir)
        except OSError as exc:
            self._send(Answer(False, "temp", f"cannot lock {maildir}: {exc.strerror}"))
            return
        if lock is None:
            self._send(Answer(False, "in-use", "your mailbox is in use by another session"))
            return
        try:
            mailbox = Mailbox.open(maildir)
        except MailboxError as exc:
            lock.release()
            self._send(Answer(False, "maildir", exc.text))
            return
        except OSError as exc:
            lock.release()
            self._send(Answer(False, "temp", f"cannot open {maildir}: {exc.strerror}"))
            return
        self.lock, self.mailbox = lock, mailbox
        listed = tuple(
            (m.uid, m.size, disk)
            for m, disk in zip(mailbox.messages, mailbox.disk_sizes, strict=True)
        )
        self._send(Answer(True, maildir=ticket.maildir, messages=listed))

    def _fetch(self, request: FetchRequest) -> None:
        mailbox = self.mailbox
        if mailbox is None or self.lock is None:
            self._send(Answer(False, "bad", "no mailbox open"))
            return
        try:
            message = mailbox.get(request.number)
        except MessageNumberError as exc:
            self._send(Answer(False, "number", exc.text))
            return
        try:
            fd = os.open(f"{mailbox.maildir}/{message.name}", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self._send(Answer(False, "io", "unable to open that message"))
            return
        try:
            disk = mailbox.disk_sizes[request.number - 1]
            self._send(Answer(True, disk=disk), fd)
        finally:
            os.close(fd)

    def _commit(self, request: CommitRequest) -> None:
        mailbox = self.mailbox
        if mailbox is None or self.lock is None:
            self._send(Answer(False, "bad", "no mailbox open"))
            return
        try:
            for number in request.deleted:
                mailbox.delete(number)
        except MessageNumberError as exc:
            mailbox.reset()
            self._send(Answer(False, "number", exc.text))
            return
        problems = mailbox.commit()
        lock, self.lock = self.lock, None
        lock.release()
        self.done = True
        self._send(Answer(True, problems=tuple(problems)))

    def _quota(self, request: QuotaRequest) -> None:
        domains = os.path.realpath(self.broker.home.domains)
        maildir = os.path.realpath(request.maildir)
        if os.path.commonpath([domains, maildir]) != domains or maildir == domains:
            self._send(Answer(False, "denied", "not a Maildir of this home"))
            return
        try:
            percent = percent_used(
                Path(maildir),
                Quota(request.bytes, request.messages),
                hostname=self.broker.hostname,
            )
        except OSError as exc:
            self._send(Answer(False, "io", f"cannot read the quota: {exc.strerror}"))
            return
        self._send(Answer(True, percent=max(percent, 0)))


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True  # a held session does not keep a stopping broker alive
    broker: Broker


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server = self.server
        assert isinstance(server, _Server)
        sock = self.request
        assert isinstance(sock, socket.socket)
        sock.settimeout(IDLE_SECONDS)
        Session(server.broker, sock).serve()

    def finish(self) -> None:
        pass  # Session.close closed the socket


class Broker:
    """The broker's state: where it listens, who may ask, the host name for maildirsize."""

    def __init__(self, home: Home, peers: Peers | None = None) -> None:
        self.home = home
        self.peers = peers or Peers()
        self.hostname = load_config(home).controls.me
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        """Listen (a stale socket of a killed predecessor is replaced) and serve in a
        thread."""
        path = socket_path(self.home)
        path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        server = _Server(os.fspath(path), _Handler)
        server.broker = self
        os.chmod(path, SOCKET_MODE)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="mailbox", daemon=True)
        self._thread.start()
        return os.fspath(path)

    def close(self) -> None:
        server = self._server
        if server is not None:
            server.shutdown()
            server.server_close()
            self._server = None


def serve_mailbox(home: Home, ready: Callable[[], None], peers: Peers | None = None) -> None:
    """Serve until SIGTERM or SIGINT; *ready* once the socket listens."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # nothing to reload: it reads no settings
    broker = Broker(home, peers)
    path = broker.start()
    log.info("mailboxd mailbox broker listening on %s", path)
    known = broker.peers
    imap = FsServer(home, broker.hostname, known.imapd, known.root)
    log.info("mailboxd mailbox broker listening for imapd on %s", imap.start())
    ready()
    while not stop.wait(3600):
        pass
    imap.close()
    broker.close()
