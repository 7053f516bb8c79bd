"""The POP3 view of a Maildir: what qmail-pop3d does with the files (spec 19.5).

No sockets and no protocol parsing here: :mod:`.mailbox` is the per-session snapshot
(listing, UIDL, streaming, UPDATE at QUIT) and :mod:`.lock` keeps it to one session per
mailbox.
"""

from qtoaster.pop3.lock import MailboxLock
from qtoaster.pop3.mailbox import Mailbox, MailboxError, Message, MessageNumberError

__all__ = ["Mailbox", "MailboxError", "MailboxLock", "Message", "MessageNumberError"]
