"""qtoaster.config."""
