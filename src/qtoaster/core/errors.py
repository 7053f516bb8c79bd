"""The exception tree of qtoaster: every exception class in the package descends from
`QtoasterError`, so "anything qtoaster raised on purpose" is one ``except`` (a test walks
every module to keep it so, tests/core/test_error_tree.py).

Where a class also stands for a builtin condition it keeps that base too (multiple
inheritance), so ``except ValueError`` and friends still catch it.  Defined here are the
nodes; the leaves live beside the code that raises them (module in brackets).

QtoasterError
├── ConfigError          a setting or control file is invalid (carries every problem)
├── TemporaryFailure     infrastructure trouble: disk, database, DNS -> 4xx, retry later
│   ├── QueueError            the queue could not commit a message (qmail-queue exit code)
│   ├── DirectoryUnavailable  the directory database cannot be reached [directory.engine]
│   ├── MailboxError          a Maildir cannot be read or written [maildir.mailbox]
│   ├── BrokerError (OSError) the mailbox broker refused or failed [broker.client]
│   ├── DnsTemporary          mail authentication's DNS gave no answer [mailauth.dnsquery]
│   └── ScannerUnavailable    clamd/spamd unreachable, slow or confused [scanners]
├── PermanentFailure     the request can never succeed -> 5xx / bounce
│   └── MessageNumberError    POP3: no such message [maildir.mailbox]
├── FormatError          data we were handed does not follow its grammar
│   ├── AddressSyntaxError (ValueError)  [core.address]
│   ├── EnvelopeError, BadQueueFile      queue file formats [queue.format]
│   ├── DotQmailError                    a .qmail file qmail-local refuses [delivery.dotqmail]
│   ├── QuotaSyntaxError (ValueError)    [maildir.quota]
│   ├── EreError (ValueError)            a qregex pattern [policy.ere]
│   ├── DumpError (ValueError)           a vpopmail MySQL dump [importer.mysqldump]
│   ├── SrsError (ValueError)            an SRS address that does not reverse [mailauth.srs]
│   ├── PolicyError (ValueError)         an MTA-STS policy that cannot be used [remote.mtasts]
│   ├── Unsignable                       a message DKIM cannot sign [mailauth.dkimsign]
│   ├── SocketProtocolError (ValueError) a line of the auth role's or the broker's socket
│   │                                    protocol (``ProtocolError`` there)
│   └── _Bad                             one tcp.smtp line [config.tcprules]
├── ProtocolError        a protocol engine was driven against its rules
│   ├── SmtpProtocolError, Pop3ProtocolError   [protocols.smtp.states, protocols.pop3.states]
│   ├── ClientStateError (RuntimeError)  [protocols.smtp.client]
│   ├── SaslStateError (RuntimeError)    [protocols.sasl]
│   ├── BareLineFeed (ValueError)        SMTP smuggling defence [protocols.smtp.dataframe]
│   ├── PartialLineError (ValueError)    [protocols.smtp.bodyencode]
│   └── _Malformed                       not an SMTP reply line [protocols.smtp.client]
├── DeliveryAttemptError one attempt at a remote host failed; the remote agent decides what next
│   ├── DnsFailure, ConnectFailed        [remote.dns, remote.session]
│   ├── DaneFailure                      the certificate does not match TLSA [remote.dane]
│   └── Skip, TlsFallback                try the next host / the same host in clear [remote.session]
├── DirectoryError       a directory change is refused (no such domain, duplicate) [directory.model]
├── KeyStoreError        the DKIM key store refuses a change or a file [mailauth.dkimkeys]
├── TlsError             TLS cannot be offered; qmail's reason [tls.server]
├── PrivilegeError       root could not be dropped for good [core.privilege]
├── Locked               another process holds a home's lock [core.lock]
├── ListenError          a listener address cannot be ours [supervisor.runner]
├── SpamdTooBig          the message is over spamd's size limit: not scanned [scanners.spamd]
├── NoSuchMessage (LookupError)  no such queue message [queue.store]
└── UsageError           sendmail's command line is wrong [cli.sendmail]
"""

from __future__ import annotations


class QtoasterError(Exception):
    pass


class ConfigError(QtoasterError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class TemporaryFailure(QtoasterError):
    pass


class PermanentFailure(QtoasterError):
    pass


class FormatError(QtoasterError):
    """Input (a file, an address, a pattern, a dump) that does not follow its grammar."""


class SocketProtocolError(FormatError, ValueError):
    """Bytes on one of our own Unix sockets (the auth role's, the mailbox broker's) that are
    not a request or an answer of its protocol."""


class ProtocolError(QtoasterError):
    """A protocol engine was driven against its rules, by the peer or by our driver."""


class DeliveryAttemptError(QtoasterError):
    """One attempt to deliver to a remote host failed; the agent picks the next step."""


class QueueError(TemporaryFailure):
    """Carries a qmail-queue exit code (qmail-queue(8)); see ``queue.exitcodes``."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message or f"qmail-queue exit {code}")
        self.code = code
