"""A pop3d worker process: serves POP3 sessions on already-bound sockets.

Like smtpd, N workers (two per core by default, decisions/0006) share the listeners on
SO_REUSEPORT sockets. Listeners, signals, the idle timeout (spec 19.1: 20 minutes) and the
graceful stop are :func:`qtoaster.net.serve.serve`'s, the reload, the auth role's client
and the poll of the APOP/CRAM-MD5 offer
:class:`~qtoaster.auth.readerworker.MailReaderWorker`'s (shared with imapd). Signals:
SIGTERM/SIGINT stop accepting and close the sessions once no command is in flight (at most
``grace_seconds``; RFC 1939's UPDATE happens only at QUIT, so closing loses nothing);
SIGHUP re-reads the configuration (certificates included) for new sessions.
"""

from __future__ import annotations

from typing import ClassVar

from qtoaster.auth.protocol import MechanismsResponse
from qtoaster.auth.readerworker import MailReaderWorker
from qtoaster.broker.protocol import socket_path as broker_socket_path
from qtoaster.config.loader import Config
from qtoaster.directory.lazy import LazyDirectory
from qtoaster.pop3d.context import Pop3Context
from qtoaster.pop3d.session import Pop3Session


class Pop3Worker(MailReaderWorker[Pop3Context, Pop3Session]):
    role: ClassVar[str] = "pop3d"
    # The database and Maildir scans off the loop, QUIT's updates too.
    threads: ClassVar[int] = 4
    thread_prefix: ClassVar[str] = "pop3-io"
    # A stop waits this long for commands in flight (a login, a big RETR, QUIT's UPDATE),
    # then closes every session: RFC 1939's UPDATE happens only at QUIT, so closing loses
    # nothing.
    grace_seconds: ClassVar[float] = 10.0

    def setup(self, config: Config) -> None:
        self.directory = LazyDirectory(self.home, config.settings.database_url)

    def reconfigure(self, config: Config) -> None:
        if config.settings.database_url != self.ctx.config.settings.database_url:
            old, self.directory = (
                self.directory,
                LazyDirectory(self.home, config.settings.database_url),
            )
            old.close()

    def close(self) -> None:
        self.directory.close()

    def build(self, config: Config) -> Pop3Context:
        return Pop3Context.build(
            config,
            self.directory,
            self.executor,
            self.auth,
            self.secrets,
            broker_socket_path(self.home),
        )

    def new_session(self, kind: str) -> Pop3Session:
        return Pop3Session(self.ctx, self.sessions, kind)

    def offered(self, answer: MechanismsResponse) -> bool:
        # CRAM-MD5/APOP are offered only while every account keeps secrets.
        return answer.apop
