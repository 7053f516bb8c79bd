"""qtoaster.protocols.smtp: the sans-IO SMTP engines (RFC 5321 server and client, qmail's rules)."""
