"""qtoaster.directory."""
