"""The sans-IO IMAP4rev2/IMAP4rev1 engine and the pure parts of IMAP (docs/imap.md)."""
