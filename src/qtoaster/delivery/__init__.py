"""The local delivery agent (qmail-local): routing, .qmail files, Maildir, mbox and programs.

It writes mailboxes only through ``maildir/`` and re-injects forwards through ``queue/``.
"""
