"""rblsmtpd's limited SMTP dialog with a blocked client, as a sans-IO state machine.

Follows ucspi-tcp's rblsmtpd.c and the command reader it shares with qmail (commands.c):
the greeting is ``220 rblsmtpd.local``; HELO, EHLO, MAIL, RSET and NOOP are answered
``250 rblsmtpd.local``; QUIT is answered ``221 rblsmtpd.local`` and ends the dialog; every
other line, the empty one included, gets the refusal (``451 text`` or ``553 text``), so the
client never reaches RCPT or DATA.  A line ends at LF, one trailing CR is stripped, the verb
is the text before the first space (or NUL: commands.c cuts a C string) and is compared
case-insensitively for ASCII letters (case_equals).

The driver (the smtpd session) owns the socket: it sends :meth:`RblsmtpdDialog.greeting`,
feeds what it reads, writes the replies, closes when told to, drops the connection after
rblsmtpd's ``-t`` seconds (60 by default) and writes the log line :func:`log_line`.  With
``-t 0`` rblsmtpd sends the refusal alone, without greeting or dialog, and closes: the
driver writes :attr:`RblsmtpdDialog.refusal` and closes.

Invariants: memory is bounded (a command line keeps at most MAX_LINE bytes, the rest of the
line up to its LF is dropped); every reply is one CRLF-terminated line; after QUIT the
machine is closed and ignores any further input; the output does not depend on how the
input is split into chunks.
"""

from __future__ import annotations

from qtoaster.core.reply import Reply

GREETING = b"220 rblsmtpd.local\r\n"
ACCEPTED = b"250 rblsmtpd.local\r\n"
BYE = b"221 rblsmtpd.local\r\n"
# commands.c has no limit (memory only); a verb longer than "helo" is refused anyway, so
# keeping the start of a line is enough to answer it exactly as rblsmtpd does.
MAX_LINE = 1000
_ACCEPTED_VERBS = frozenset({b"helo", b"ehlo", b"mail", b"rset", b"noop"})


class RblsmtpdDialog:
    """Answers a blocked client's commands; ``feed`` -> (reply bytes, close now?)."""

    def __init__(self, refusal: Reply) -> None:
        # Reply.render gives "CODE text\r\n"; rblsmtpd texts are single printable lines.
        self.refusal = refusal.render()
        self.closed = False
        self._line = bytearray()

    @staticmethod
    def greeting() -> bytes:
        return GREETING

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """Consume *data*; answer every complete line, in order."""
        out = bytearray()
        start = 0
        while not self.closed:
            end = data.find(b"\n", start)
            self._keep(data[start:] if end < 0 else data[start:end])
            if end < 0:
                break
            out += self._answer(bytes(self._line))
            self._line.clear()
            start = end + 1
        return bytes(out), self.closed

    def _keep(self, chunk: bytes) -> None:
        room = MAX_LINE - len(self._line)
        if room > 0:
            self._line += chunk[:room]

    def _answer(self, line: bytes) -> bytes:
        if line.endswith(b"\r"):
            line = line[:-1]
        verb = line.split(b" ", 1)[0].split(b"\0", 1)[0].lower()  # bytes.lower: ASCII only
        if verb == b"quit":
            self.closed = True
            return BYE
        if verb in _ACCEPTED_VERBS:
            return ACCEPTED
        return self.refusal


def log_line(remote_ip: str, pid: int, refusal: Reply) -> str:
    """rblsmtpd's line on descriptor 2: ``rblsmtpd: <ip> pid <pid>: <reply>``."""
    return f"rblsmtpd: {remote_ip} pid {pid}: {refusal.code} {refusal.text}"
