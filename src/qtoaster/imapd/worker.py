"""An imapd worker process: serves IMAP sessions on already-bound sockets.

Like pop3d, N workers (two per core by default, ``[imapd] workers``) share the listeners on
SO_REUSEPORT sockets. Listeners, signals, the idle sweep and the graceful stop are
:func:`qtoaster.net.serve.serve`'s, the reload, the auth role's client and the poll of the
CRAM-MD5 offer :class:`~qtoaster.auth.readerworker.MailReaderWorker`'s (shared with pop3d).
Signals: SIGTERM/SIGINT stop accepting and end the sessions (``* BYE``) once no command is
in flight (at most ``grace_seconds``: every change a command makes is written through the
store before its tagged answer, so closing between commands loses nothing); SIGHUP re-reads
the configuration (certificates included) for new sessions.
"""

from __future__ import annotations

from typing import ClassVar

from qtoaster.auth.protocol import MechanismsResponse
from qtoaster.auth.readerworker import MailReaderWorker
from qtoaster.config.loader import Config
from qtoaster.imapd.context import ImapContext
from qtoaster.imapd.session import ImapSession


class ImapWorker(MailReaderWorker[ImapContext, ImapSession]):
    role: ClassVar[str] = "imapd"
    # The store's reads and writes (local) or the broker's opens run here, off the loop.
    threads: ClassVar[int] = 8
    thread_prefix: ClassVar[str] = "imap-io"
    # A stop waits this long for commands in flight (a login, a big FETCH, an APPEND).
    grace_seconds: ClassVar[float] = 10.0

    def build(self, config: Config) -> ImapContext:
        return ImapContext.build(config, self.executor, self.auth, self.secrets)

    def new_session(self, kind: str) -> ImapSession:
        return ImapSession(self.ctx, self.sessions, kind)

    def offered(self, answer: MechanismsResponse) -> bool:
        # CRAM-MD5 is offered only while accounts keep secrets, as pop3d decides it.
        return answer.cram
