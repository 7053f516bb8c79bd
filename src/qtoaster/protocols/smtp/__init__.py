"""qtoaster.protocols.smtp."""
