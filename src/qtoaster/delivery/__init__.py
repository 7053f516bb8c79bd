"""qtoaster.delivery."""
