"""qtoaster.protocols.pop3: the sans-IO POP3 server engine (RFC 1939, 2449, 2595, 5034)."""
