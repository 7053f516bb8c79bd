"""qtoaster.protocols."""
