"""qtoaster.policy."""
