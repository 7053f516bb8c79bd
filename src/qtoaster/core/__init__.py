"""qtoaster.core."""
