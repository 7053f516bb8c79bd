"""Maildir++: the one package that reads and writes mailboxes under ``domains/``.

:mod:`.deliver` writes a message (tmp -> new, qmail's rules), :mod:`.quota` keeps
``maildirsize`` byte-exact, :mod:`.mailbox` is a reader's snapshot of ``cur``/``new``
(POP3's listing, UIDL and UPDATE at QUIT), :mod:`.lock` keeps a mailbox to one POP3
session.  Local delivery and pop3d use it; nothing else touches a Maildir.
"""
