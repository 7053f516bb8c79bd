"""qtoaster.queue."""
