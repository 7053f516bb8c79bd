"""The IMAP role (issue 15): imapd workers serving IMAP and IMAPS (docs/imap.md)."""
